#pragma once
// How a YAML value is named in an error message ("cpu_second: a list is not a price"):
// a scalar by its text, anything else by its kind. Header-only, so only the libraries
// that parse YAML (and link yaml-cpp) pull it in.
#include <yaml-cpp/yaml.h>

#include <string>

namespace fnmesh {

inline std::string describe_yaml(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Scalar: return n.Scalar().empty() ? "an empty string" : n.Scalar();
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a map";
    default: return "nothing";
  }
}

}  // namespace fnmesh
