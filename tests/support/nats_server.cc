#include "tests/support/nats_server.h"

#include <arpa/inet.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <regex>
#include <stdexcept>
#include <thread>

namespace fnmesh::test {
namespace fs = std::filesystem;
namespace {

// True when something on 127.0.0.1:port speaks the NATS protocol (sends INFO).
bool answers(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{0, 500'000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  bool ok = false;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    char buf[5] = {};
    ok = ::recv(fd, buf, sizeof buf, MSG_WAITALL) == 5 && std::string_view(buf, 5) == "INFO ";
  }
  ::close(fd);
  return ok;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

fs::path nats_server::binary() {
  if (const char* env = std::getenv("FNMESH_NATS_SERVER"); env && *env) return env;
  return find_program("nats-server");
}

nats_server::nats_server(nats_server_options opts)
    : opts_(std::move(opts)), dir_("fnmesh-nats") {
  write_config();
  start(-1);
}

void nats_server::write_config() {
  std::ofstream conf(dir_ / "server.conf");
  conf << "# written by the fnmesh test fixture\n"
       << "max_payload: 8MB\n";
  if (!opts_.server_name.empty()) conf << "server_name: " << opts_.server_name << "\n";
  if (!opts_.cluster_name.empty()) {
    conf << "cluster {\n  name: " << opts_.cluster_name << "\n  listen: \"127.0.0.1:"
         << opts_.cluster_port << "\"\n  routes: [\n";
    for (int p : opts_.route_ports)
      if (p != opts_.cluster_port) conf << "    \"nats-route://127.0.0.1:" << p << "\"\n";
    conf << "  ]\n}\n";
  }
  conf << opts_.extra_config << "\n";
}

nats_server::~nats_server() {
  if (process_) process_->stop(std::chrono::seconds(3));
}

void nats_server::start(int port) {
  const fs::path bin = binary();
  if (bin.empty()) throw std::runtime_error("nats-server not found (install the nats-server package)");
  const fs::path ports_dir = dir_ / "ports";
  std::error_code ec;
  fs::remove_all(ports_dir, ec);
  fs::create_directories(ports_dir);

  spawn_options so;
  so.program = bin;
  so.args = {"-c", (dir_ / "server.conf").string(), "-a", "127.0.0.1", "-p",
             std::to_string(port), "--ports_file_dir", ports_dir.string()};
  if (opts_.jetstream) {
    so.args.push_back("-js");
    so.args.push_back("-sd");
    so.args.push_back((dir_ / "js").string());
  }
  so.log = dir_ / "nats-server.log";
  process_.emplace(child_process::spawn(so));

  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  const std::regex url_re("nats://127\\.0\\.0\\.1:([0-9]+)");
  while (std::chrono::steady_clock::now() < until) {
    if (!process_->running())
      throw std::runtime_error("nats-server exited at start:\n" + log_text());
    {
      for (const auto& entry : fs::directory_iterator(ports_dir, ec)) {
        std::smatch m;
        std::string text = slurp(entry.path());
        if (std::regex_search(text, m, url_re)) port_ = std::stoi(m[1].str());
      }
    }
    if (port_ > 0 && answers(port_)) {
      url_ = "nats://127.0.0.1:" + std::to_string(port_);
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  throw std::runtime_error("nats-server did not answer within 20 s:\n" + log_text());
}

bool nats_server::running() { return process_ && process_->running(); }

void nats_server::stop() {
  if (process_) process_->stop(std::chrono::seconds(10));
}

void nats_server::kill() {
  if (process_ && process_->running()) {
    process_->signal(SIGKILL);
    process_->wait(std::chrono::seconds(10));
  }
}

void nats_server::restart() {
  if (running()) stop();
  start(port_);
}

std::string nats_server::log_text() const { return slurp(dir_ / "nats-server.log"); }

int free_loopback_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot find a free port");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

nats_cluster::nats_cluster() {
  std::vector<int> routes;
  for (int i = 0; i < 3; ++i) routes.push_back(free_loopback_port());
  for (int i = 0; i < 3; ++i) {
    nats_server_options o;
    o.server_name = "n" + std::to_string(i + 1);
    o.cluster_name = "fnmesh-test";
    o.cluster_port = routes[size_t(i)];
    o.route_ports = routes;
    servers_.push_back(std::make_unique<nats_server>(o));
  }
  if (!wait_replicated(servers_[0]->url(), std::chrono::seconds(30)))
    throw std::runtime_error("the JetStream cluster could not place 3 replicas within 30 s:\n" +
                             servers_[0]->log_text());
}

bool nats_cluster::wait_replicated(const std::string& url, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  natsConnection* nc = nullptr;
  while (natsConnection_ConnectTo(&nc, url.c_str()) != NATS_OK) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  jsCtx* js = nullptr;
  bool ok = false;
  if (natsConnection_JetStream(&js, nc, nullptr) == NATS_OK) {
    const char* subjects[] = {"fnmesh-fixture.probe"};
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = "FNMESH_FIXTURE_PROBE";
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_MemoryStorage;
    cfg.Replicas = 3;
    while (!ok && std::chrono::steady_clock::now() < until) {
      jsStreamInfo* si = nullptr;
      ok = js_AddStream(&si, js, &cfg, nullptr, nullptr) == NATS_OK;
      if (si) jsStreamInfo_Destroy(si);
      if (!ok) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    if (ok) js_DeleteStream(js, cfg.Name, nullptr, nullptr);
    jsCtx_Destroy(js);
  }
  natsConnection_Destroy(nc);
  return ok;
}

std::string nats_cluster::urls() const {
  std::string out;
  for (const auto& s : servers_) {
    if (!out.empty()) out += ",";
    out += s->url();
  }
  return out;
}

bool nats_cluster::wait_jetstream(const std::string& url, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    natsConnection* nc = nullptr;
    if (natsConnection_ConnectTo(&nc, url.c_str()) == NATS_OK) {
      jsCtx* js = nullptr;
      jsAccountInfo* ai = nullptr;
      bool ok = natsConnection_JetStream(&js, nc, nullptr) == NATS_OK &&
                js_GetAccountInfo(&ai, js, nullptr, nullptr) == NATS_OK;
      if (ai) jsAccountInfo_Destroy(ai);
      if (js) jsCtx_Destroy(js);
      natsConnection_Destroy(nc);
      if (ok) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return false;
}

}  // namespace fnmesh::test
