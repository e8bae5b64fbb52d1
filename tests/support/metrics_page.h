#pragma once
// Reading a daemon's Prometheus /metrics page in tests: the raw HTTP exchange, one
// sample's value, and the port a daemon logged ("metrics at http://127.0.0.1:PORT/metrics").
#include <string>

#include "tests/support/child_process.h"

namespace fnmesh::test {

// GET http://127.0.0.1:<port><path>: the whole response, head and body ("" if refused).
std::string http_get(int port, const std::string& path);
// The value of the sample `series` (name and labels exactly as printed), or -1 if absent.
double sample(const std::string& text, const std::string& series);
// The /metrics port `p` logged at start, or 0 if it logged none.
int logged_metrics_port(const child_process& p);

}  // namespace fnmesh::test
