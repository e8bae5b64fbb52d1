#pragma once
// api: the collector's query API (/v1/usage, /v1/activations, /v1/activations/<id>), one
// implementation whatever carries it. Takes who asks, the path and the decoded query
// parameters; returns an HTTP status and a JSON body (README "HTTP API"). Parameters are
// checked here, so every transport gives the same 400 text. Uses the reader it is given
// from the one thread that calls handle.
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fnmesh::collector {

class reader;

// Who asks: an admin sees every tenant, anyone else only `tenant`.
struct caller {
  bool admin = false;
  std::string tenant;
};

struct api_response {
  int status = 200;
  std::string body;  // JSON
};

using query_params = std::vector<std::pair<std::string, std::string>>;

class api {
 public:
  explicit api(reader& db) : db_(db) {}
  api_response handle(const caller& who, std::string_view path, const query_params& params);

 private:
  api_response usage(const caller& who, const query_params& params);
  api_response activations(const caller& who, const query_params& params);
  api_response activation(const caller& who, std::string_view id);
  reader& db_;
};

}  // namespace fnmesh::collector
