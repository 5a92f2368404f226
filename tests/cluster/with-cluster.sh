#!/usr/bin/env bash
# Runs a command with the test control plane up: starts it when it is not running and
# stops it afterwards; a cluster that was already running (make cluster-up) is left alone.
#
#   with-cluster.sh COMMAND [ARGS...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
state="${GANTRY_CLUSTER_DIR:-$repo/target/testcluster}"

running() {
  [[ -f "$state/env" && -x "$state/bin/kubectl" ]] \
    && "$state/bin/kubectl" --kubeconfig "$state/kubeconfig" get --raw /readyz >/dev/null 2>&1
}

if running; then
  echo "cluster: using the running cluster in $state" >&2
else
  "$here/up.sh" "$state"
  trap '"$here/down.sh" "$state"' EXIT
fi
set -a
# shellcheck disable=SC1091
source "$state/env"
set +a
"$@"
