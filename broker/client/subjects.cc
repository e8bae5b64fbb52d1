#include "broker/client/subjects.h"

namespace fnmesh::broker {
namespace {

std::string join(std::string_view a, std::string_view b, std::string_view c,
                 char sep = '.') {
  std::string s;
  s.reserve(a.size() + b.size() + c.size() + 2);
  s.append(a).push_back(sep);
  s.append(b).push_back(sep);
  s.append(c);
  return s;
}

// Next token of `s` starting at `pos` (advances pos past the following '.').
std::string_view next_token(std::string_view s, size_t& pos) noexcept {
  size_t dot = s.find('.', pos);
  std::string_view tok = s.substr(pos, dot == std::string_view::npos ? s.npos : dot - pos);
  pos = dot == std::string_view::npos ? s.size() + 1 : dot + 1;
  return tok;
}

}  // namespace

std::string invoke_subject(std::string_view tenant, std::string_view function) {
  return join("fnmesh.invoke", tenant, function);
}
std::string event_subject(std::string_view subject) {
  return std::string("fnmesh.events.").append(subject);
}
std::string dlq_subject(std::string_view tenant, std::string_view function) {
  return join("fnmesh.dlq", tenant, function);
}
std::string doorbell_subject(std::string_view tenant, std::string_view function) {
  return join("fnmesh.doorbell", tenant, function);
}
std::string logs_subject(std::string_view tenant, std::string_view function) {
  return join("fnmesh.logs", tenant, function);
}
std::string consumer_name(std::string_view tenant, std::string_view function) {
  return join("fn", tenant, function, '_');
}
std::string function_key(std::string_view tenant, std::string_view function) {
  std::string s(tenant);
  s.push_back('.');
  s.append(function);
  return s;
}

bool subject_matches(std::string_view pattern, std::string_view subject) noexcept {
  if (pattern.empty() || subject.empty()) return false;
  size_t p = 0, s = 0;
  while (p <= pattern.size()) {
    std::string_view pt = next_token(pattern, p);
    if (pt == ">") return s <= subject.size() && p > pattern.size();
    if (s > subject.size()) return false;
    std::string_view st = next_token(subject, s);
    if (st.empty()) return false;
    if (pt != "*" && pt != st) return false;
  }
  return s > subject.size();
}

}  // namespace fnmesh::broker
