# Gantry: `make demo` and `make test` set up everything they need (Rust, Go and make must
# be installed; Kubernetes, kwok, helm, the registry and crane are built from Go modules
# into a cache, once).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
CARGO ?= cargo
CLUSTER := tests/cluster
STATE ?= $(CURDIR)/target/testcluster
export GANTRY_CLUSTER_DIR := $(STATE)
# tests print their own progress; keep cargo's parallelism within the 2-core machines
TEST_THREADS ?= 4

.PHONY: screenshots help build deps tools lint fmt crds unit test demo cluster-up cluster-down bench bench-images bench-rollouts bench-targets bench-failover bench-fleet bench-monorepo bench-isolation bench-notify bench-plan bench-ui image image-push

help:
	@echo "make demo          local control plane + Gantry + example resources"
	@echo "make test          lint, unit and end-to-end tests (starts and stops the cluster)"
	@echo "make cluster-up    start the local control plane (kubeconfig: $(STATE)/kubeconfig)"
	@echo "make cluster-down  stop it"
	@echo "make crds          regenerate crds/ from the Rust types"
	@echo "make image         the controller image, without a container engine (target/image/gantry.tar)"
	@echo "make image-push IMAGE=registry/path/gantry:tag   push it"

# Debian packages the harness uses (present on most machines; installed when missing);
# Chromium and its driver drive the web view's tests.
deps:
	@missing=""; \
	for p in git:git gpg:gnupg openssl:openssl curl:curl python3:python3 ssh-keygen:openssh-client /usr/bin/time:time chromium:chromium chromedriver:chromium-driver; do \
	  command -v "$${p%%:*}" >/dev/null || missing="$$missing $${p##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; apt-get update -qq && apt-get install -y -qq $$missing; \
	fi
	@# sshd (for the Git-over-SSH tests) needs its privilege-separation user, as Debian's
	@# openssh-server package would create it; the package itself is not installed.
	@id sshd >/dev/null 2>&1 || useradd --system --home-dir /run/sshd --shell /usr/sbin/nologin sshd

tools: deps
	@$(CLUSTER)/build.sh >/dev/null

build:
	$(CARGO) build

fmt:
	$(CARGO) fmt

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

crds:
	$(CARGO) run --quiet -- crds --out-dir crds
	$(CARGO) run --quiet -- crds --out-dir charts/gantry/crds
	$(CARGO) run --quiet -- plan --schema > docs/plan.schema.json

unit:
	$(CARGO) test --lib --bins

# The controller image (no container engine needed; see tests/image/build.sh and the
# Dockerfile). The in-cluster tests run its filesystem.
image: tools
	tests/image/build.sh

image-push: image
	@test -n "$(IMAGE)" || { echo "usage: make image-push IMAGE=<registry>/<path>/gantry:<tag>"; exit 2; }
	$$(tests/cluster/build.sh)/crane push target/image/gantry.tar "$(IMAGE)"

test: lint tools image
	$(CARGO) build --all-targets
	$(CLUSTER)/with-cluster.sh $(CARGO) test --lib --bins --tests -- --test-threads=$(TEST_THREADS)

cluster-up: tools
	$(CLUSTER)/up.sh $(STATE)

cluster-down:
	$(CLUSTER)/down.sh $(STATE)

# The README's screenshots of the web view, from the last e2e run (tests/e2e/ui).
screenshots:
	mkdir -p docs/screenshots
	for f in fleet-fifty application-tree canary diff login in-cluster-fleet; do \
	  cp target/ui-screenshots/$$f.png docs/screenshots/; done

# The demo leaves the cluster running so it can be explored; `make cluster-down` stops it.
# It builds only what it uses (no Prometheus, no sshd).
demo: deps
	GANTRY_TOOLS=core $(CLUSTER)/build.sh >/dev/null
	$(CARGO) build
	GANTRY_TOOLS=core $(CLUSTER)/up.sh $(STATE)
	set -a; source $(STATE)/env; set +a; examples/demo.sh

# Benchmarks: RESULT lines, side by side with kubectl on the same cluster (see BENCHMARKS.md).
bench: tools
	$(CARGO) build --release --benches
	$(CLUSTER)/with-cluster.sh sh -c '$(CARGO) bench --bench gitops && $(CARGO) bench --bench images && $(CARGO) bench --bench rollouts && $(CARGO) bench --bench targets && $(CARGO) bench --bench failover && $(CARGO) bench --bench monorepo && $(CARGO) bench --bench isolation' && $(MAKE) bench-fleet

# Only the rollout benchmarks (canary abort, rollback vs kubectl rollout undo).
bench-rollouts: tools
	$(CLUSTER)/with-cluster.sh $(CARGO) bench --bench rollouts

# Only the fleet benchmark: GANTRY_FLEET_N Applications (1,000; 10,000 for the large figure)
# on one controller, GANTRY_FLEET_IDLE_S seconds of idle measured after.
bench-fleet: tools
	GANTRY_FLUX_DIR=$$($(CLUSTER)/build-flux.sh) $(CLUSTER)/with-cluster.sh $(CARGO) bench --bench fleet

# Only the monorepo fetch benchmark (50,000 files, 5,000 commits; against git clone/fetch/pull).
bench-monorepo: tools
	$(CLUSTER)/with-cluster.sh $(CARGO) bench --bench monorepo

# Only the noisy-neighbour benchmark: a well-behaved tenant's push-to-Ready time alone and
# while a hostile tenant runs every isolation case at once (target: ≤ 2× alone).
bench-isolation: tools
	$(CLUSTER)/with-cluster.sh $(CARGO) bench --bench isolation

# Only the notification benchmark: 500 Applications, a commit-status Notifier on a real
# Gitea and a webhook Notifier; time to every status `success` vs. time to all Ready
# without Notifiers (target ≤ 1.2×), forge requests per Application, memory added.
bench-notify: tools
	$(CLUSTER)/with-cluster.sh $(CARGO) bench --bench notify

# Only the web view benchmark: the fleet page of 1,000 Applications (server time, weight,
# a status change to the open page, the controller's memory with 10 open pages).
bench-ui: tools
	$(CLUSTER)/with-cluster.sh $(CARGO) bench --bench ui

# Only the pull request plan benchmark: 500 Applications on a real Gitea, a pull request
# changing 50 → time from the webhook to the plan comment vs. the time to sync those 50
# (target ≤ 2×), API requests per planned Application, and the other 450's time to Ready
# beside a plan vs. alone (target < 1.1×).
bench-plan: tools
	$(CLUSTER)/with-cluster.sh $(CARGO) bench --bench plan

# Only the leader failover benchmark (time from a stopped leader to the standby's first write).
bench-failover: tools
	$(CLUSTER)/with-cluster.sh $(CARGO) bench --bench failover

# Only the tenancy and remote-cluster benchmarks (impersonated and remote applies vs local).
bench-targets: tools
	$(CLUSTER)/with-cluster.sh $(CARGO) bench --bench targets

# Only the image automation benchmarks (push → commit → rollout, 10k-tag scan).
bench-images: tools
	$(CLUSTER)/with-cluster.sh $(CARGO) bench --bench images
