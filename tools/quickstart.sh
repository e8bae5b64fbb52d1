#!/usr/bin/env bash
# The quick start: installs what is missing, builds, starts a local mesh (or reuses the one
# running), deploys every example, triggers them through each trigger that exists (CLI,
# HTTP, an event), prints the results and the billing table, and leaves the mesh running.
#
# FNMESH_BUILD_DIR=<dir>: use binaries already built there (skips setup and build).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${FNMESH_BUILD_DIR:-}" ]; then
  tools/setup.sh
  echo "==> building (tools/build.sh)"
  tools/build.sh
fi
build="${FNMESH_BUILD_DIR:-build}"
fnmesh="$build/bin/fnmesh"

step() { printf '\n==> %s\n' "$*"; }
# Shows a command as one could paste it, then runs it.
run() {
  local shown="\$" a
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then shown+=" $a"; else shown+=" '${a//\'/\'\\\'\'}'"; fi
  done
  printf '%s\n' "$shown"
  "$@"
}
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1], ""))' "$1"; }

step "local mesh"
if "$fnmesh" status >/dev/null 2>&1; then
  echo "a mesh is already running: reusing it"
  "$fnmesh" status
else
  "$fnmesh" down >/dev/null 2>&1 || true  # what is left of a mesh that died
  if listening 4222 || listening 7700 || listening 7701 || listening 8080; then
    run "$fnmesh" up --ports auto            # the default ports are taken
  else
    run "$fnmesh" up
  fi
fi
http="$("$fnmesh" status --json | json_field http)"
keys="$("$fnmesh" status --json | json_field api_keys)"

step "deploying every example"
for folder in examples/*/; do
  name="$(basename "$folder")"
  # Native examples are built: their deployable folder (binary + fnmesh.yml) is in the build tree.
  [ -d "$build/examples/$name" ] && folder="$build/examples/$name"
  [ -f "$folder/fnmesh.yml" ] || continue
  run "$fnmesh" deploy "$folder"
done
run "$fnmesh" ls

step "trigger: CLI"
run "$fnmesh" invoke hello --data '{"name":"quickstart"}'
run "$fnmesh" invoke echo --data 'ping from the native runtime'
run "$fnmesh" invoke wordcount --data 'the quick brown fox jumps over the lazy dog'

if [ -n "$http" ]; then
  step "trigger: HTTP"
  key="$(sed -n 's/^default: \[\([^],]*\).*/\1/p' "$keys")"
  printf '$ curl -X POST -H "Authorization: Bearer %s" %s/function/hello\n' "$key" "$http"
  curl -sS -X POST -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
    --data '{"name":"http"}' "$http/function/hello"
  echo
fi

step "trigger: an event on fnmesh.events.orders.created"
published="$("$fnmesh" publish orders.created '{"id":7,"items":[{"price":9.5,"qty":2},{"price":1.25}]}')"
echo "$published"
id="$(awk '/invokes on-order:/ {print $NF}' <<<"$published")"
if [ -z "$id" ]; then
  echo "quickstart: on-order did not subscribe to orders.created" >&2
  exit 1
fi
echo "waiting for on-order's result ($id)"
for _ in $(seq 1 100); do
  "$fnmesh" result "$id" >/dev/null 2>&1 && break
  sleep 0.2
done
run "$fnmesh" result "$id"

step "billing (the collector's HTTP API)"
run "$fnmesh" billing --since 1h
run "$fnmesh" activations --limit 5

echo
stop="$fnmesh down"
[ -n "${FNMESH_HOME:-}" ] && stop="FNMESH_HOME=$FNMESH_HOME $stop"
echo "mesh is running; stop it with: $stop"
