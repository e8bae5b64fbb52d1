#!/usr/bin/env bash
# The one test command: installs what is missing, builds, runs the whole suite with ctest.
# Extra arguments go to ctest (e.g. tools/test.sh -L unit).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
tools/build.sh
# The npm package `nats`: an outside client the events adapter test publishes with.
[ -d build/npm/node_modules/nats ] || npm install --silent --no-audit --no-fund --prefix build/npm nats@2
cd build
ctest --output-on-failure --timeout 600 "$@"
