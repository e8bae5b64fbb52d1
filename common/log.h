#pragma once
// Named loggers (one per component) over spdlog; set_log_level applies to all of them.
#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace fnmesh {

// The logger for a component ("node", "collector", ...), created on first use; logs to
// stderr with the component's name. Thread-safe.
std::shared_ptr<spdlog::logger> logger(const std::string& component);

// "trace" | "debug" | "info" | "warn" | "error" | "off"; false if the name is unknown.
bool set_log_level(const std::string& level);

}  // namespace fnmesh
