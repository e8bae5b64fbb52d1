#pragma once
// The names of everything fnmesh creates on NATS (DESIGN §3), and the checks on the
// tenant and function names that go into them.
#include <cstddef>
#include <string>
#include <string_view>

#include "common/names.h"

namespace fnmesh::broker {

inline constexpr std::string_view invoke_stream = "FNMESH_INVOKE";   // fnmesh.invoke.>
inline constexpr std::string_view events_stream = "FNMESH_EVENTS";   // fnmesh.events.>
inline constexpr std::string_view dlq_stream = "FNMESH_DLQ";         // fnmesh.dlq.>
inline constexpr std::string_view logs_stream = "FNMESH_LOGS";       // fnmesh.logs.>
inline constexpr std::string_view functions_bucket = "FNMESH_FUNCTIONS";
inline constexpr std::string_view code_bucket = "FNMESH_CODE";
inline constexpr std::string_view nodes_bucket = "FNMESH_NODES";
inline constexpr std::string_view default_tenant = "default";

// Payload limits checked at the edge (DESIGN §2).
struct limits {
  size_t sync_payload = 6u << 20;
  size_t async_payload = 1u << 20;
  size_t result = 6u << 20;
};

using fnmesh::valid_name;  // [a-z0-9][a-z0-9-]{0,62}

std::string invoke_subject(std::string_view tenant, std::string_view function);  // fnmesh.invoke.<t>.<f>
std::string event_subject(std::string_view subject);                             // fnmesh.events.<s>
std::string dlq_subject(std::string_view tenant, std::string_view function);     // fnmesh.dlq.<t>.<f>
std::string doorbell_subject(std::string_view tenant, std::string_view function);  // fnmesh.doorbell.<t>.<f>
std::string logs_subject(std::string_view tenant, std::string_view function);    // fnmesh.logs.<t>.<f>
std::string consumer_name(std::string_view tenant, std::string_view function);   // fn_<t>_<f>
std::string function_key(std::string_view tenant, std::string_view function);    // <t>.<f>

// NATS subject matching: '*' matches one token, '>' one or more trailing tokens.
bool subject_matches(std::string_view pattern, std::string_view subject) noexcept;

}  // namespace fnmesh::broker
