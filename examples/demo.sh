#!/usr/bin/env bash
# The demo, end to end on the local control plane: sync of examples/, a hand edit healed,
# audit mode and `gantry diff`, `gantry plan` of a branch, an image push that becomes a Git
# commit and a canary that is promoted, a bad image whose canary aborts and whose commit is
# reverted in Git, `gantry rollback`, `gantry history`, and what a Notifier told the team's
# webhook about each commit along the way.
# Expects KUBECONFIG and GANTRY_TEST_BIN (set by `make demo`).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
kubectl() { "$GANTRY_TEST_BIN/kubectl" "$@"; }
crane() { "$GANTRY_TEST_BIN/crane" "$@"; }
gantry="$repo/target/debug/gantry"
work="$repo/target/demo"
ns=demo
step() { printf '\n\033[1m== %s\033[0m\n' "$1"; [[ -z "${2:-}" ]] || printf '   \033[2m%s\033[0m\n' "$2"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# wait_for DESCRIPTION SECONDS COMMAND...: polls until COMMAND succeeds.
wait_for() {
  local what="$1" limit="$2"; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS >= deadline )); then
      echo "timed out waiting for $what; the controller's log: $work/controller.log" >&2
      tail -n 20 "$work/controller.log" >&2
      exit 1
    fi
    sleep 0.5
  done
}
app_field() { kubectl -n "$ns" get gapp web -o jsonpath="$1" 2>/dev/null; }
ready_at() { # COMMIT: Ready and Healthy at COMMIT
  [[ "$(app_field '{.status.lastAppliedRevision}')" == *"$1"* ]] &&
  [[ "$(app_field '{.status.conditions[?(@.type=="Ready")].status}/{.status.conditions[?(@.type=="Healthy")].status}')" == "True/True" ]]
}
reason_is() { [[ "$(app_field '{.status.conditions[?(@.type=="Ready")].reason}')" == "$1" ]]; }
image_is() { [[ "$(kubectl -n web get deploy web -o jsonpath='{.spec.template.spec.containers[0].image}')" == *"$1" ]]; }
no_canary() { ! kubectl -n web get deploy web-canary >/dev/null 2>&1; }
head_of() { git -C "$work/git/web.git" rev-parse main; }
head_changed() { [[ "$(head_of)" != "$1" ]]; }
push_image() { # TAG: a one-layer image team/web:TAG in the local registry
  local dir; dir="$(mktemp -d)"
  echo "web $1" > "$dir/version"; tar -cf "$dir/layer.tar" -C "$dir" version
  crane append --insecure -f "$dir/layer.tar" -t "$registry/team/web:$1" >/dev/null 2>&1
  rm -rf "$dir"
}

# A second run starts from scratch: the previous run's namespaces go (no controller runs
# now to finalize its resources, so their finalizers are dropped first).
for kind in gapp gitrepo imagepolicy; do
  for r in $(kubectl -n "$ns" get "$kind" -o name 2>/dev/null); do
    kubectl -n "$ns" patch "$r" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null
  done
done
kubectl delete namespace "$ns" web --ignore-not-found --wait=true >/dev/null
rm -rf "$work"; mkdir -p "$work/git" "$work/src/apps" "$work/registry"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

step "Installing the Gantry CRDs" "gantry crds | kubectl apply --server-side -f -"
"$gantry" crds | kubectl apply --server-side --field-manager gantry -f - >/dev/null
kubectl wait --for condition=Established --timeout 60s $(kubectl get crd -o name | grep gantry.dev) >/dev/null

port="$(free_port)"; registry="127.0.0.1:$port"
step "Starting a registry on $registry (CNCF distribution) with team/web:build-13" \
  "CI pushes numbered builds; an ImagePolicy selects the highest build number"
cat > "$work/registry/config.yml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/registry/data}}
http: {addr: $registry}
EOF
"$GANTRY_TEST_BIN/registry" serve "$work/registry/config.yml" > "$work/registry/log" 2>&1 &
pids+=($!)
wait_for "the registry" 30 curl -fsS "http://$registry/v2/"
push_image build-13

step "A Git repository with examples/apps/web (file://$work/git/web.git)"
cp -r "$repo/examples/apps/web" "$work/src/apps/"
sed -i "s|image: registry.example.com/team/web:1.3.0|image: $registry/team/web:build-13|" "$work/src/apps/web/deployment.yaml"
git init --quiet --bare --initial-branch=main "$work/git/web.git"
(
  cd "$work/src"
  git init --quiet --initial-branch=main
  git add -A
  git -c user.name=Demo -c user.email=demo@gantry.dev commit --quiet -m "web build-13"
  git push --quiet "$work/git/web.git" HEAD:main
)
first="$(head_of)"

step "Applying examples/gitrepository.yaml, examples/application.yaml and an ImagePolicy" \
  "the demo shortens intervals and canary pauses, and turns on image automation"
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl create namespace web --dry-run=client -o yaml | kubectl apply -f - >/dev/null
sed -e "s|url: .*|url: file://$work/git/web.git|" -e "s|interval: 1m|interval: 2s|" \
  "$repo/examples/gitrepository.yaml" | kubectl -n "$ns" apply -f - >/dev/null
kubectl -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: gantry.dev/v1alpha1
kind: ImagePolicy
metadata:
  name: web
spec:
  image: $registry/team/web
  interval: 2s
  filterTags:
    pattern: '^build-(?P<n>[0-9]+)'
    extract: "n"
  policy:
    numerical:
      order: asc
EOF
kubectl -n "$ns" apply -f "$repo/examples/application.yaml" >/dev/null
kubectl -n "$ns" patch gapp web --type merge -p '{"spec":{
  "rollout":{"steps":[{"weight":50},{"pause":{"duration":"3s"}}],
             "analysis":{"interval":"2s","failureLimit":2,"maxRestarts":0}},
  "imageAutomation":{"policies":["web"],
    "writeBack":{"author":{"name":"Gantry","email":"gantry@demo.test"}}}}}' >/dev/null
kubectl -n "$ns" get gapp,gitrepo,imagepolicy

hook_port="$(free_port)"
step "A webhook for the team on 127.0.0.1:$hook_port, and a Notifier that reports to it" \
  "examples/notify/webhook.yaml: a signed JSON body per revision and event"
mkdir -p "$work/hook"
python3 - "$hook_port" "$work/hook/received.jsonl" > "$work/hook/log" 2>&1 <<'PY' &
import http.server, json, sys
port, out = int(sys.argv[1]), sys.argv[2]
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(out, "a") as f:
            f.write(json.dumps({"signature": self.headers.get("X-Gantry-Signature"),
                                "body": json.loads(body)}) + "\n")
        self.send_response(200); self.end_headers()
    def log_message(self, *args): pass
http.server.HTTPServer(("127.0.0.1", port), Hook).serve_forever()
PY
pids+=($!)
kubectl -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: team-webhook
stringData:
  address: "http://127.0.0.1:$hook_port/gantry"
  token: "demo-signing-key"
---
apiVersion: gantry.dev/v1alpha1
kind: Notifier
metadata:
  name: team-webhook
spec:
  type: webhook
  secretRef:
    name: team-webhook
EOF
# received: one line per report the webhook got: short commit, state, event, description.
received() {
  python3 - "$work/hook/received.jsonl" <<'PY'
import json, sys
try:
    lines = open(sys.argv[1]).read().splitlines()
except FileNotFoundError:
    lines = []
for line in lines:
    b = json.loads(line)["body"]
    commit = b["revision"].split("@sha1:")[-1].split("#")[0][:12]
    print(f'  {commit:<12}  {b["state"]:<8} {b["event"]:<16} {b["description"]}')
PY
}
has_report() { grep -q "$1" "$work/hook/received.jsonl" 2>/dev/null; }

step "Running the controller (gantry controller --leader-elect ...)" "log: $work/controller.log"
"$gantry" controller --namespace "$ns" --data-dir "$work/data" --file-sources-root "$work/git" \
  --receiver-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 --min-interval 1s \
  --leader-elect --leader-election-namespace "$ns" 2> "$work/controller.log" &
pids+=($!)
wait_for "the Application to be Ready and Healthy at $first" 120 ready_at "$first"
"$gantry" get apps -n "$ns"
kubectl get deploy,svc -n web

step "A hand edit (kubectl set image) is drift: Gantry heals it" "drift.mode: heal"
kubectl -n web set image deployment/web web=registry.example.com/team/web:hand-edited >/dev/null
wait_for "the heal" 30 image_is build-13
echo "image now: $(kubectl -n web get deploy web -o jsonpath='{.spec.template.spec.containers[0].image}')"
kubectl -n "$ns" get events --field-selector reason=DriftHealed -o custom-columns=REASON:.reason,MESSAGE:.message | tail -n 1

step "Audit mode: the same edit is reported, not corrected; gantry diff exits 1" \
  "kubectl patch gapp web -p '{\"spec\":{\"drift\":{\"mode\":\"audit\"}}}'"
kubectl -n "$ns" patch gapp web --type merge -p '{"spec":{"drift":{"mode":"audit"}}}' >/dev/null
kubectl -n web set image deployment/web web=registry.example.com/team/web:hand-edited-again >/dev/null
wait_for "Drifted=True" 30 bash -c "[[ \$('$GANTRY_TEST_BIN/kubectl' -n $ns get gapp web -o jsonpath='{.status.conditions[?(@.type==\"Drifted\")].status}') == True ]]"
echo "image still: $(kubectl -n web get deploy web -o jsonpath='{.spec.template.spec.containers[0].image}')"
set +e
"$gantry" diff --app "$ns/web"
code=$?
set -e
echo "gantry diff exit code: $code"
kubectl -n "$ns" patch gapp web --type merge -p '{"spec":{"drift":{"mode":"heal"}}}' >/dev/null
wait_for "the heal after audit" 30 image_is build-13
echo "back to heal mode: the hand edit is gone"

step "A branch for review: gantry plan says what merging it would do" \
  "gantry plan --source $ns/web --ref more-ports (exit 0 none, 1 changes, 2 refused)"
(
  cd "$work/src"
  git checkout --quiet -b more-ports
  sed -i 's/targetPort: 8080/targetPort: 8081/' apps/web/service.yaml
  printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-settings\ndata:\n  greeting: hello\n' \
    > apps/web/settings.yaml
  git add -A
  git -c user.name=Demo -c user.email=demo@gantry.dev commit --quiet -m "web: port 8081, settings"
  git push --quiet "$work/git/web.git" HEAD:more-ports
  git checkout --quiet main
)
set +e
"$gantry" plan --source "$ns/web" --ref more-ports
code=$?
set -e
echo "gantry plan exit code: $code (the branch is not merged: the cluster is unchanged)"

step "CI pushes build-14: a Git commit, then a canary that is promoted" \
  "ImagePolicy → commit in Git → sync → web-canary at 50% → analysis → promotion"
before="$(head_of)"
push_image build-14
wait_for "the image commit" 60 head_changed "$before"
bump="$(head_of)"
git -C "$work/git/web.git" log -1 --format='commit %h by %an: %s' main
git -C "$work/git/web.git" show --format= -U0 main | grep '^[-+] ' || true
wait_for "the canary" 60 kubectl -n web get deploy web-canary
kubectl -n web get deploy
wait_for "the promotion" 120 bash -c "[[ \$('$GANTRY_TEST_BIN/kubectl' -n web get deploy web -o jsonpath='{.spec.template.spec.containers[0].image}') == *build-14 ]] && ! '$GANTRY_TEST_BIN/kubectl' -n web get deploy web-canary"
wait_for "Ready at the bump" 60 ready_at "$bump"
echo "promoted: web runs build-14, the canary is gone"

step "CI pushes build-15-bad: its canary crash-loops, is aborted, and Git is reverted" \
  "onFailure: revert; the stable Deployment never leaves build-14"
before="$(head_of)"
push_image build-15-bad
wait_for "the image commit" 60 head_changed "$before"
bad="$(head_of)"
wait_for "the canary" 60 kubectl -n web get deploy web-canary
wait_for "the abort" 120 head_changed "$bad"
git -C "$work/git/web.git" log -3 --format='%h %an: %s' main
revert="$(head_of)"
wait_for "Ready at the revert" 120 ready_at "$revert"
wait_for "the canary removed" 30 no_canary
echo "web runs $(kubectl -n web get deploy web -o jsonpath='{.spec.template.spec.containers[0].image}')"
kubectl -n "$ns" get imagepolicy web -o jsonpath='held: {.status.heldTags[*].tag}{"\n"}'

step "gantry rollback $ns/web --to $(git -C "$work/git/web.git" rev-parse --short "$first")" \
  "git revert of the later commits on the Application's path, pushed; the cluster follows"
"$gantry" rollback "$ns/web" --to "$first" --wait
wait_for "build-13 back" 120 image_is build-13
git -C "$work/git/web.git" log -2 --format='%h %an: %s' main

step "gantry history $ns/web"
"$gantry" history "$ns/web"

step "What the team's webhook heard (oldest first)" \
  "a report per revision as it went pending, deployed, aborted and reverted; drift healed"
wait_for "the rollback's report" 60 has_report rolled-back
received
echo "each body is signed: X-Gantry-Signature: $(head -n 1 "$work/hook/received.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["signature"][:30])')…"
"$gantry" get notifiers -n "$ns"

cleanup
trap - EXIT
echo
echo "The cluster is still running: export KUBECONFIG=$KUBECONFIG"
echo "See it in a browser: $gantry ui -n $ns   (then open http://127.0.0.1:8080/)"
echo "Stop it with: make cluster-down"
