#include "common/errc.h"

#include <string>

namespace fnmesh {
namespace {

class category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "fnmesh"; }
  std::string message(int v) const override {
    switch (static_cast<errc>(v)) {
      case errc::ok: return "ok";
      case errc::invalid_argument: return "invalid argument";
      case errc::malformed: return "malformed message";
      case errc::too_large: return "payload too large";
      case errc::not_found: return "not found";
      case errc::timeout: return "timed out";
      case errc::unavailable: return "unavailable";
      case errc::closed: return "closed";
    }
    return "unknown error " + std::to_string(v);
  }
};

}  // namespace

const std::error_category& fnmesh_category() noexcept {
  static const category instance;
  return instance;
}

}  // namespace fnmesh
