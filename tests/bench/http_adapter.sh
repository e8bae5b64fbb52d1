#!/usr/bin/env bash
# The http adapter under load (issue 5): wrk with 64 connections against a whole local
# mesh (nats-server, collector, one node, fnmesh-http), two targets alternated round by
# round in one run so the machine's noise falls on both alike:
#   noop    POST /function/noop — a warm native function that returns nothing (end to end)
#   adapter POST /function/missing — answered 404 by the adapter itself (its own ceiling)
# noop runs again with 16 connections: with 64 in flight and no queue in front, latency is
# at least 64 / throughput, so the 16-connection run shows the latency of the path itself.
# Prints each round's requests/s, p50 and p99, then the medians. Needs a build with the
# examples; about (seconds + 2) x 2 per round:
#   tests/bench/http_adapter.sh [build-dir] [rounds] [seconds per run]
set -euo pipefail

build=$(realpath "${1:-build}")
rounds=${2:-3}
seconds=${3:-10}
fnmesh=$build/bin/fnmesh
command -v wrk >/dev/null || { echo "http_adapter: wrk not found: run tools/setup.sh" >&2; exit 1; }
[[ -x $fnmesh && -x $build/examples/echo/echo ]] || { echo "http_adapter: build first (tools/build.sh)" >&2; exit 1; }

export FNMESH_HOME
FNMESH_HOME=$(mktemp -d /tmp/fnmesh-http-bench.XXXXXX)
trap '"$fnmesh" down >/dev/null 2>&1 || true; rm -rf "$FNMESH_HOME"' EXIT

"$fnmesh" up --ports auto --slots 64 >/dev/null
# noop: the native echo program given no body.
mkdir "$FNMESH_HOME/noop"
cp "$build/examples/echo/echo" "$FNMESH_HOME/noop/"
printf 'functions:\n  noop:\n    runtime: native\n    handler: echo\n    memory: 128\n    timeout: 5\n' \
  >"$FNMESH_HOME/noop/fnmesh.yml"
"$fnmesh" deploy "$FNMESH_HOME/noop" >/dev/null
http=$("$fnmesh" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["http"])')
key=$(sed -n 's/^default: \[\([^],]*\).*/\1/p' "$FNMESH_HOME/api-keys.yml")
cat >"$FNMESH_HOME/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer $key"
LUA

# One wrk run (path, seconds, connections): "requests/s p50_ms p99_ms non2xx".
load() {
  local out
  out=$(wrk -t2 -c"${3:-64}" -d"${2}s" --latency -s "$FNMESH_HOME/post.lua" "$http$1")
  awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec/ { rps = $2 }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    /Non-2xx/ { bad = $5 }
    END { printf "%d %.2f %.2f %d\n", rps, p50, p99, bad }' <<<"$out"
}

load /function/noop 3 >/dev/null  # warm sandboxes up to the connections in flight

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
printf '%-6s %-8s %12s %9s %9s %9s\n' round target "requests/s" "p50 ms" "p99 ms" "non-2xx"
noop=() noop16=() adapter=()
for ((r = 1; r <= rounds; r++)); do
  read -r rps p50 p99 bad < <(load /function/noop "$seconds"); noop+=("$rps $p50 $p99")
  printf '%-6s %-8s %12s %9s %9s %9s\n' "$r" noop "$rps" "$p50" "$p99" "$bad"
  read -r rps p50 p99 bad < <(load /function/noop "$seconds" 16); noop16+=("$rps $p50 $p99")
  printf '%-6s %-8s %12s %9s %9s %9s\n' "$r" noop-c16 "$rps" "$p50" "$p99" "$bad"
  read -r rps p50 p99 bad < <(load /function/missing "$seconds"); adapter+=("$rps $p50 $p99")
  printf '%-6s %-8s %12s %9s %9s %9s\n' "$r" adapter "$rps" "$p50" "$p99" "$bad (404 expected)"
done

column() { printf '%s\n' "${@:2}" | awk -v c="$1" '{ print $c }' | median; }
printf '\nmedian  noop: %s requests/s, p50 %s ms, p99 %s ms (target >= 3000/s, p99 <= 10 ms)\n' \
  "$(column 1 "${noop[@]}")" "$(column 2 "${noop[@]}")" "$(column 3 "${noop[@]}")"
printf 'median  noop, 16 connections: %s requests/s, p50 %s ms, p99 %s ms\n' \
  "$(column 1 "${noop16[@]}")" "$(column 2 "${noop16[@]}")" "$(column 3 "${noop16[@]}")"
printf 'median  adapter (404): %s requests/s, p50 %s ms, p99 %s ms (target >= 30000/s)\n' \
  "$(column 1 "${adapter[@]}")" "$(column 2 "${adapter[@]}")" "$(column 3 "${adapter[@]}")"
