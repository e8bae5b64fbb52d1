#!/usr/bin/env bash
# The one test command: installs what is missing, builds, runs the whole suite with ctest.
# Extra arguments go to ctest (e.g. tools/test.sh -L unit).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
tools/build.sh
cd build
ctest --output-on-failure --timeout 600 "$@"
