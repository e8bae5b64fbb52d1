#pragma once
// fnmesh_proto: the generated message types plus the few helpers every receiver uses.
// verified<T>() is the only way a received buffer is read: it runs the FlatBuffers
// Verifier and returns nullptr for anything malformed.
#include <flatbuffers/flatbuffers.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "flatbuffers/fnmesh_generated.h"

namespace fnmesh::proto {

// Largest buffer any receiver accepts (a 6 MiB payload plus headroom).
inline constexpr size_t max_message_bytes = 8u << 20;

template <class T>
const T* verified(std::span<const uint8_t> bytes) noexcept {
  if (bytes.empty() || bytes.size() > max_message_bytes) return nullptr;
  flatbuffers::Verifier verifier(bytes.data(), bytes.size(),
                                 flatbuffers::Verifier::Options{.max_depth = 64,
                                                                .max_tables = 1'000'000,
                                                                .check_alignment = true});
  if (!verifier.VerifyBuffer<T>(nullptr)) return nullptr;
  return flatbuffers::GetRoot<T>(bytes.data());
}

inline std::string_view view(const flatbuffers::String* s) noexcept {
  return s ? std::string_view(s->data(), s->size()) : std::string_view{};
}

inline std::span<const uint8_t> bytes(const flatbuffers::Vector<uint8_t>* v) noexcept {
  return v ? std::span<const uint8_t>(v->data(), v->size()) : std::span<const uint8_t>{};
}

inline std::span<const uint8_t> bytes(const flatbuffers::FlatBufferBuilder& b) noexcept {
  return {b.GetBufferPointer(), b.GetSize()};
}

inline std::string_view text(std::span<const uint8_t> b) noexcept {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

const char* status_name(Status s) noexcept;
const char* runtime_name(Runtime r) noexcept;
const char* trigger_name(Trigger t) noexcept;

}  // namespace fnmesh::proto
