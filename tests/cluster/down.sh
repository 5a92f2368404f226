#!/usr/bin/env bash
# Stops exactly the processes that up.sh started (recorded in STATE_DIR/pids), newest first.
#
#   down.sh [STATE_DIR]    default STATE_DIR: <repo>/target/testcluster
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
state="${1:-${GANTRY_CLUSTER_DIR:-$repo/target/testcluster}}"
pids="$state/pids"
[[ -s "$pids" ]] || { echo "cluster: nothing running in $state" >&2; exit 0; }

ours() { # pid name: true if the pid still runs the binary we started under that name
  [[ -r "/proc/$1/cmdline" ]] && tr '\0' '\n' < "/proc/$1/cmdline" | head -n1 | grep -q "/$2\$"
}

mapfile -t entries < <(tac "$pids")
for entry in "${entries[@]}"; do
  read -r pid name <<< "$entry"
  ours "$pid" "$name" && kill -TERM "$pid" 2>/dev/null
done
for entry in "${entries[@]}"; do
  read -r pid name <<< "$entry"
  for _ in $(seq 1 50); do ours "$pid" "$name" || break; sleep 0.2; done
  if ours "$pid" "$name"; then
    echo "cluster: $name ($pid) ignored SIGTERM, sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null
  fi
done
: > "$pids"
rm -f "$state/env"
echo "cluster: stopped ($state)" >&2
