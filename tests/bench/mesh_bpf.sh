#!/usr/bin/env bash
# What the BPF meter costs end to end (issue 4): `fnmesh bench` through a whole local mesh
# (nats-server, collector, one node, warm native echo) with the node's BPF meter on and off,
# alternated round by round in one run so the machine's noise falls on both alike. Prints
# each round's throughput and latency, then the medians and the on/off throughput ratio.
# Needs root and a build with FNMESH_BPF; about 20 s per round:
#   tests/bench/mesh_bpf.sh [build-dir] [rounds] [invocations per bench]
set -euo pipefail

build=$(realpath "${1:-build}")
rounds=${2:-5}
n=${3:-20000}
fnmesh=$build/bin/fnmesh
[[ -x $fnmesh ]] || { echo "mesh_bpf: $fnmesh not found: build first" >&2; exit 1; }
[[ -d $build/examples/echo ]] || { echo "mesh_bpf: $build/examples/echo not found: build first" >&2; exit 1; }

export FNMESH_HOME
FNMESH_HOME=$(mktemp -d /tmp/fnmesh-mesh-bpf.XXXXXX)
trap '"$fnmesh" down >/dev/null 2>&1 || true; rm -rf "$FNMESH_HOME"' EXIT

# One bench against a fresh mesh: "throughput p50 p99".
bench() {
  "$fnmesh" up --ports auto "$@" >/dev/null
  [[ -f $FNMESH_HOME/deployed ]] || { "$fnmesh" deploy "$build/examples/echo" >/dev/null && touch "$FNMESH_HOME/deployed"; }
  local out
  out=$("$fnmesh" bench -n "$n" -c 16 --warmup 2000 --function echo)
  "$fnmesh" down >/dev/null
  local p50 p99 rate
  p50=$(sed -n 's/.*p50 \([0-9]*\).*/\1/p' <<<"$out")
  p99=$(sed -n 's/.*p99 \([0-9]*\).*/\1/p' <<<"$out")
  rate=$(sed -n 's/.*throughput: \([0-9]*\) .*/\1/p' <<<"$out")
  echo "$rate $p50 $p99"
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

printf '%-6s %-8s %12s %9s %9s\n' round meter "invocations/s" "p50 µs" "p99 µs"
on=() off=()
for ((r = 1; r <= rounds; r++)); do
  for meter in on off; do
    if [[ $meter == on ]]; then read -r rate p50 p99 < <(bench); on+=("$rate $p50 $p99")
    else read -r rate p50 p99 < <(bench --no-bpf); off+=("$rate $p50 $p99"); fi
    printf '%-6s %-8s %12s %9s %9s\n' "$r" "$meter" "$rate" "$p50" "$p99"
  done
done

column() { printf '%s\n' "${@:2}" | awk -v c="$1" '{ print $c }' | median; }
on_rate=$(column 1 "${on[@]}") off_rate=$(column 1 "${off[@]}")
printf '\nmedian  on: %s/s p50 %s µs p99 %s µs;  off: %s/s p50 %s µs p99 %s µs\n' \
  "$on_rate" "$(column 2 "${on[@]}")" "$(column 3 "${on[@]}")" \
  "$off_rate" "$(column 2 "${off[@]}")" "$(column 3 "${off[@]}")"
awk -v a="$on_rate" -v b="$off_rate" 'BEGIN { printf "throughput with the BPF meter: %.3f of without (cost %+.1f %%)\n", a / b, (1 - a / b) * 100 }'
