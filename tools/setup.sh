#!/usr/bin/env bash
# Installs every Debian package fnmesh builds, tests and runs with. Idempotent: when
# everything is present it only checks and returns.
set -euo pipefail

packages=(
  build-essential cmake pkg-config g++ clang
  libnats-dev nats-server
  cppzmq-dev libzmq3-dev
  libflatbuffers-dev flatbuffers-compiler python3-flatbuffers
  libbpf-dev bpftool
  libtbb-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libsqlite3-dev sqlite3
  libseccomp-dev
  libyaml-cpp-dev libcli11-dev libspdlog-dev nlohmann-json3-dev
  libboost-dev
  libssl-dev
  python3 nodejs curl
  python3-zmq          # the outside ZeroMQ client of tests/integration/collector_python_test.py
  python3-dev          # the python zygote embeds the interpreter (node/runtimes/python/zygote.cc)
  bubblewrap           # the reference sandbox the sandbox benchmark measures against
  wrk                  # the http adapter's load benchmark (tests/bench/http_adapter.sh)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm installs the outside Node.js NATS client the tests use; some nodejs packages ship it.
command -v npm >/dev/null || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
