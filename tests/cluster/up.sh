#!/usr/bin/env bash
# Starts a local Kubernetes control plane on 127.0.0.1 with free ports:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake nodes).
#
#   up.sh [STATE_DIR]      default STATE_DIR: <repo>/target/testcluster
#
# Writes STATE_DIR/kubeconfig (admin), STATE_DIR/env (KUBECONFIG, GANTRY_TEST_BIN),
# STATE_DIR/pids (the processes it started; down.sh stops exactly those) and logs/.
# With GANTRY_TEST_APISERVER_ONLY=1 only etcd and kube-apiserver start (a private control
# plane for a test that restarts its API server: restart-apiserver.sh STATE_DIR).
# With GANTRY_CLUSTER_PROFILING=1 kube-apiserver serves /debug/pprof (to see what bounds a
# benchmark: kubectl get --raw '/debug/pprof/profile?seconds=30' > cpu.pprof).
# Idempotent: when the cluster in STATE_DIR is already up, it says so and exits 0.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
state="${1:-${GANTRY_CLUSTER_DIR:-$repo/target/testcluster}}"
mkdir -p "$state"
state="$(cd "$state" && pwd)"
NODES="${GANTRY_TEST_NODES:-4}"
profiling=false
[[ "${GANTRY_CLUSTER_PROFILING:-0}" == 1 ]] && profiling=true

log() { echo "cluster: $*" >&2; }

alive() { # true when every recorded process is still running
  [[ -s "$state/pids" ]] || return 1
  while read -r pid name; do
    [[ -d "/proc/$pid" ]] || return 1
  done < "$state/pids"
}

if alive && [[ -f "$state/kubeconfig" ]] \
  && "$state/bin/kubectl" --kubeconfig "$state/kubeconfig" get --raw /readyz >/dev/null 2>&1; then
  log "already running ($state)"
  exit 0
fi
if [[ -s "$state/pids" ]]; then
  log "stale state in $state: stopping what is left of it"
  "$here/down.sh" "$state"
fi

bin="$("$here/build.sh")"
ln -sfn "$bin" "$state/bin"
rm -rf "$state/pki" "$state/etcd" "$state/logs" "$state/kwok" "$state/audit"
mkdir -p "$state/pki" "$state/logs" "$state/kwok" "$state/audit"
: > "$state/pids"

# Six free ports, all held open until all are chosen so that no two are the same (one at
# a time, the kernel may hand out a port again as soon as it is closed).
free_ports() {
  python3 -c '
import socket, sys
held = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); held.append(s)
print(" ".join(str(s.getsockname()[1]) for s in held))' "$1"
}
read -r ETCD_PORT PEER_PORT API_PORT KCM_PORT SCHED_PORT KWOK_PORT < <(free_ports 6)

# --- certificates -----------------------------------------------------------------
pki="$state/pki"
(
  cd "$pki"
  openssl_q() { openssl "$@" 2>/dev/null; }
  openssl_q genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key
  openssl_q req -x509 -new -key ca.key -subj "/CN=gantry-test-ca" -days 3650 -out ca.crt
  sign() { # name subject extensions
    openssl_q genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key"
    openssl_q req -new -key "$1.key" -subj "$2" -out "$1.csr"
    printf '%s\n' "$3" > "$1.ext"
    openssl_q x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
      -days 3650 -extfile "$1.ext" -out "$1.crt"
  }
  sign apiserver "/CN=kube-apiserver" \
    "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.96.0.1
extendedKeyUsage=serverAuth
keyUsage=digitalSignature,keyEncipherment"
  sign admin "/O=system:masters/CN=kubernetes-admin" \
    "extendedKeyUsage=clientAuth
keyUsage=digitalSignature,keyEncipherment"
  # Users whose writes the audit log records (tests of leader election count them).
  for r in a b c; do
    sign "replica-$r" "/O=system:masters/CN=gantry-replica-$r" \
      "extendedKeyUsage=clientAuth
keyUsage=digitalSignature,keyEncipherment"
  done
  openssl_q genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out sa.key
  openssl_q pkey -in sa.key -pubout -out sa.pub
)

b64() { base64 -w0 < "$1"; }
cat > "$state/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: gantry-test
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(b64 "$pki/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(b64 "$pki/admin.crt")
    client-key-data: $(b64 "$pki/admin.key")
contexts:
- name: gantry-test
  context:
    cluster: gantry-test
    user: admin
current-context: gantry-test
KUBECONFIG
chmod 600 "$state/kubeconfig"
kc="$state/kubeconfig"
for r in a b c; do
  sed -e "s#$(b64 "$pki/admin.crt")#$(b64 "$pki/replica-$r.crt")#" \
      -e "s#$(b64 "$pki/admin.key")#$(b64 "$pki/replica-$r.key")#" "$kc" > "$state/replica-$r.kubeconfig"
  chmod 600 "$state/replica-$r.kubeconfig"
done
# The audit log records the writes of the replica users only (metadata: who, verb, object).
cat > "$state/audit-policy.yaml" <<POLICY
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  users: ["gantry-replica-a", "gantry-replica-b", "gantry-replica-c"]
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
- level: None
POLICY

start() { # name args...
  local name="$1"; shift
  # the command line is kept, so restart-apiserver.sh can start the same process again
  printf '%q ' "$bin/$name" "$@" > "$state/$name.cmd"
  "$bin/$name" "$@" >> "$state/logs/$name.log" 2>&1 &
  echo "$! $name" >> "$state/pids"
}

fail() {
  log "$1; last lines of the logs:"
  for f in "$state"/logs/*.log; do echo "== $f" >&2; tail -n 15 "$f" >&2; done
  "$here/down.sh" "$state" || true
  exit 1
}

wait_for() { # description timeout-seconds command...
  local what="$1" limit="$2"; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS >= deadline )); then fail "timed out after ${limit}s waiting for $what"; fi
    sleep 0.2
  done
}

# --- processes -------------------------------------------------------------------
log "starting etcd on 127.0.0.1:$ETCD_PORT"
start etcd --name default --data-dir "$state/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-cluster "default=http://127.0.0.1:$PEER_PORT" \
  --unsafe-no-fsync --quota-backend-bytes 8589934592 --log-level warn
wait_for etcd 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

log "starting kube-apiserver on 127.0.0.1:$API_PORT"
start kube-apiserver \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --secure-port "$API_PORT" --advertise-address 127.0.0.1 \
  --endpoint-reconciler-type none \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-account-issuer https://kubernetes.default.svc \
  --authorization-mode Node,RBAC \
  --service-cluster-ip-range 10.96.0.0/16 \
  --allow-privileged=true --profiling="$profiling" \
  --audit-policy-file "$state/audit-policy.yaml" --audit-log-path "$state/audit/audit.log" \
  --audit-log-format json \
  --max-requests-inflight 1000 --max-mutating-requests-inflight 500
wait_for kube-apiserver 90 "$bin/kubectl" --kubeconfig "$kc" get --raw /readyz
if [[ "${GANTRY_TEST_APISERVER_ONLY:-}" == 1 ]]; then
  wait_for "the default namespace" 30 "$bin/kubectl" --kubeconfig "$kc" get namespace default
  printf 'export KUBECONFIG=%s\nexport GANTRY_TEST_KUBECONFIG=%s\nexport GANTRY_TEST_BIN=%s\n' "$kc" "$kc" "$bin" > "$state/env"
  log "ready (etcd and kube-apiserver only): export KUBECONFIG=$kc"
  exit 0
fi

log "starting kube-controller-manager, kube-scheduler and kwok"
start kube-controller-manager \
  --kubeconfig "$kc" --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --leader-elect=false \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --use-service-account-credentials=true \
  --kube-api-qps 200 --kube-api-burst 400 \
  --concurrent-deployment-syncs 10 --concurrent-replicaset-syncs 10 \
  --profiling=false
start kube-scheduler \
  --kubeconfig "$kc" --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --leader-elect=false \
  --profiling=false
{ cat "$here/kwok-node-stages.yaml"; echo "---"; cat "$here/kwok-stages.yaml"; } > "$state/kwok/stages.yaml"
start kwok \
  --kubeconfig "$kc" --config "$state/kwok/stages.yaml" \
  --manage-all-nodes=false \
  --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --server-address "127.0.0.1:$KWOK_PORT" \
  --node-ip 127.0.0.1

# --- fake nodes with realistic capacity ---------------------------------------------
for i in $(seq 0 $((NODES - 1))); do
  cat <<NODE
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    node-role.kubernetes.io/worker: ""
    topology.kubernetes.io/zone: zone-$((i % 2))
status:
  allocatable:
    cpu: "16"
    memory: 64Gi
    pods: "110"
    ephemeral-storage: 200Gi
  capacity:
    cpu: "16"
    memory: 64Gi
    pods: "110"
    ephemeral-storage: 200Gi
  nodeInfo:
    architecture: amd64
    operatingSystem: linux
    kubeletVersion: fake
NODE
done > "$state/kwok/nodes.yaml"
wait_for "node API" 30 "$bin/kubectl" --kubeconfig "$kc" get nodes
"$bin/kubectl" --kubeconfig "$kc" apply -f "$state/kwok/nodes.yaml" >/dev/null

nodes_ready() {
  local ready
  ready=$("$bin/kubectl" --kubeconfig "$kc" get nodes \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True)
  [[ "$ready" -ge "$NODES" ]]
}
wait_for "$NODES kwok nodes to be Ready" 60 nodes_ready
wait_for "the default ServiceAccount" 60 "$bin/kubectl" --kubeconfig "$kc" -n default get serviceaccount default

# `source` it (exported, so kubectl and gantry see the cluster too) or `set -a; source`.
cat > "$state/env" <<ENV
export KUBECONFIG=$kc
export GANTRY_TEST_KUBECONFIG=$kc
export GANTRY_TEST_BIN=$bin
ENV
log "ready: export KUBECONFIG=$kc   (stop with: make cluster-down)"
