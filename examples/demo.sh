#!/usr/bin/env bash
# The demo: a local control plane, Gantry's CRDs, a Git repository with the web app,
# the example GitRepository and Application, and the controller running for a while.
# Expects KUBECONFIG and GANTRY_TEST_BIN (set by tests/cluster/with-cluster.sh).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
kubectl() { "$GANTRY_TEST_BIN/kubectl" "$@"; }
gantry="$repo/target/debug/gantry"
work="$repo/target/demo"
ns=demo
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Installing the Gantry CRDs"
"$gantry" crds | kubectl apply --server-side --field-manager gantry -f -
kubectl wait --for condition=Established --timeout 60s $(kubectl get crd -o name | grep gantry.dev) >/dev/null

step "Creating a Git repository with the web app (file://$work/git/web.git)"
rm -rf "$work"; mkdir -p "$work/git" "$work/src/apps"
cp -r "$repo/examples/apps/web" "$work/src/apps/"
git init --quiet --bare --initial-branch=main "$work/git/web.git"
(
  cd "$work/src"
  git init --quiet --initial-branch=main
  git add -A
  git -c user.name=Demo -c user.email=demo@gantry.dev commit --quiet -m "web 1.3.0"
  git push --quiet "$work/git/web.git" HEAD:main
)

step "Applying examples/gitrepository.yaml and examples/application.yaml in namespace $ns"
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# the Application deploys into the namespace `web`
kubectl create namespace web --dry-run=client -o yaml | kubectl apply -f - >/dev/null
sed "s|url: .*|url: file://$work/git/web.git|" "$repo/examples/gitrepository.yaml" | kubectl -n "$ns" apply -f -
kubectl -n "$ns" apply -f "$repo/examples/application.yaml"

step "Running the controller until the Application is Ready and Healthy"
"$gantry" controller --receiver-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 --namespace "$ns" --data-dir "$work/data" --file-sources-root "$work/git" 2> "$work/controller.log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  ready=$(kubectl -n "$ns" get gapp web -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}/{.status.conditions[?(@.type=="Healthy")].status}' 2>/dev/null || true)
  [[ "$ready" == "True/True" ]] && break
  sleep 0.5
done

step "kubectl get gantry -n $ns"
kubectl get gantry -n "$ns" -o wide

step "What it deployed (kubectl get deploy,svc,pods -n web)"
kubectl get deploy,svc,pods -n web

step "A hand edit (kubectl set image) is drift: Gantry heals it"
kubectl -n web set image deployment/web web=registry.example.com/team/web:hand-edited >/dev/null
sleep 3
echo "image now: $(kubectl -n web get deploy web -o jsonpath='{.spec.template.spec.containers[0].image}')"
kubectl -n "$ns" get events --field-selector reason=DriftHealed -o custom-columns=REASON:.reason,MESSAGE:.message | tail -n 2

step "gantry history $ns/web"
KUBECONFIG="$KUBECONFIG" "$gantry" history "$ns/web"

kill -TERM "$pid"; wait "$pid" || true
trap - EXIT
echo
echo "The cluster is still running: export KUBECONFIG=$KUBECONFIG"
echo "Stop it with: make cluster-down"
