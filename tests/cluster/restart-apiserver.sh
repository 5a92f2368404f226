#!/usr/bin/env bash
# Restarts the kube-apiserver that up.sh started in STATE_DIR: SIGTERM, wait until it is
# gone, start it again with the same command line on the same port, wait until ready.
#
#   restart-apiserver.sh STATE_DIR [DOWN_SECONDS]
set -euo pipefail
state="$1"
down="${2:-0}"
pids="$state/pids"
pid=$(awk '$2 == "kube-apiserver" { p = $1 } END { print p }' "$pids")
[[ -n "$pid" ]] || { echo "restart-apiserver: no kube-apiserver in $pids" >&2; exit 1; }
if [[ -r "/proc/$pid/cmdline" ]] && tr '\0' '\n' < "/proc/$pid/cmdline" | head -n1 | grep -q '/kube-apiserver$'; then
  kill -TERM "$pid"
  for _ in $(seq 1 100); do [[ -d "/proc/$pid" ]] || break; sleep 0.1; done
  [[ -d "/proc/$pid" ]] && kill -KILL "$pid"
fi
sleep "$down"
cmd="$(cat "$state/kube-apiserver.cmd")"
bash -c "exec $cmd" >> "$state/logs/kube-apiserver.log" 2>&1 &
new=$!
# the new process replaces the old one in the list down.sh stops
grep -v "^$pid kube-apiserver\$" "$pids" > "$pids.tmp" || true
echo "$new kube-apiserver" >> "$pids.tmp"
mv "$pids.tmp" "$pids"
bin="$(dirname "$(awk '{print $1}' "$state/kube-apiserver.cmd")")"
for _ in $(seq 1 300); do
  "$bin/kubectl" --kubeconfig "$state/kubeconfig" get --raw /readyz >/dev/null 2>&1 && exit 0
  sleep 0.2
done
echo "restart-apiserver: not ready after 60s" >&2
exit 1
