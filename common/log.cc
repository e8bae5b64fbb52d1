#include "common/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace fnmesh {

std::shared_ptr<spdlog::logger> logger(const std::string& component) {
  if (auto existing = spdlog::get(component)) return existing;
  try {
    auto made = spdlog::stderr_color_mt(component);
    made->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n] %v");
    made->set_level(spdlog::get_level());
    return made;
  } catch (const spdlog::spdlog_ex&) {  // created concurrently by another thread
    return spdlog::get(component);
  }
}

bool set_log_level(const std::string& level) {
  auto parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off") return false;
  spdlog::set_level(parsed);
  return true;
}

}  // namespace fnmesh
