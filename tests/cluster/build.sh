#!/usr/bin/env bash
# Builds the test infrastructure from upstream Go modules, once, into a cache
# directory keyed by the pins (versions.env, go.mod, go.sum). Prints the bin dir.
#
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
#       from the wrapper module in this directory (one `go build`, shared packages
#       compile once);
#   kwok, helm, registry (CNCF distribution), crane
#       with `go install <module>@<version>`;
#   prometheus (canary analysis tests)
#       from the wrapper module in prometheus/ (pinned there: Prometheus v3.0.1, module
#       v0.300.1; newer releases need pseudo-versions the module proxy refuses with 403);
#   sops and age-keygen (the SOPS decryption tests; sops is also in the image), and
#       cosign (the signed image and chart tests; v2, whose `sign` writes the
#       `sha256-<digest>.sig` signatures Gantry checks),
#       pinned here, not in versions.env (whose every change rebuilds Kubernetes);
#   gitea (the forge of the notification tests)
#       by build-gitea.sh into a cache of its own, linked here as bin/gitea and its
#       templates and options as bin/gitea-share.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/versions.env"

key="$(cat "$here/versions.env" "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-16)"
cache_root="${GANTRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gantry}"
out="$cache_root/testcluster-$KUBE_VERSION-$key"
bin="$out/bin"

log() { echo "build.sh: $*" >&2; }
SOPS_VERSION=v3.13.3
AGE_VERSION=v1.3.1
COSIGN_VERSION=v2.6.5

if [[ -f "$out/.complete" && -x "$bin/sshd" && -x "$bin/prometheus" && -x "$bin/gitea" && -x "$bin/sops" && -x "$bin/age-keygen" && -x "$bin/cosign" ]]; then
  echo "$bin"
  exit 0
fi
# GANTRY_TOOLS=core (make demo): the control plane, kwok, helm, the registry and crane only;
# Prometheus and sshd (tests only) are built by the next full run.
core=false
[[ "${GANTRY_TOOLS:-all}" == core ]] && core=true
if $core && [[ -x "$bin/kube-apiserver" && -x "$bin/kwok" && -x "$bin/registry" && -x "$bin/crane" && -x "$bin/helm" ]]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$bin"
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local

minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
v="k8s.io/component-base/version"
cv="k8s.io/client-go/pkg/version"
ldflags="-s -w"
for pkg in "$v" "$cv"; do
  ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

if [[ ! -x "$bin/kube-apiserver" || ! -x "$bin/etcd" ]]; then
  log "building Kubernetes $KUBE_VERSION and etcd $ETCD_VERSION from Go modules (cold: 15-30 min on 2 cores)"
  start=$SECONDS
  (cd "$here" && go build -trimpath -ldflags "$ldflags" -o "$bin/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl \
    go.etcd.io/etcd/server/v3)
  # the etcd main package is go.etcd.io/etcd/server/v3, so go names its binary "server"
  mv "$bin/server" "$bin/etcd"
  log "Kubernetes binaries built in $((SECONDS - start))s"
fi

install_tool() { # name module@version
  local name="$1" spec="$2"
  if [[ ! -x "$bin/$name" ]]; then
    log "installing $spec"
    GOFLAGS= GOBIN="$bin" go install -trimpath -ldflags "-s -w" "$spec"
  fi
}
install_tool kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
install_tool helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
install_tool registry "github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION"
install_tool crane "github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION"
install_tool sops "github.com/getsops/sops/v3/cmd/sops@$SOPS_VERSION"
install_tool age-keygen "filippo.io/age/cmd/age-keygen@$AGE_VERSION"
if $core; then
  echo "$bin"
  exit 0
fi

# cosign: tests only (a few minutes cold).
install_tool cosign "github.com/sigstore/cosign/v2/cmd/cosign@$COSIGN_VERSION"

if [[ ! -x "$bin/prometheus" ]]; then
  log "building Prometheus from Go modules (cold: ~15 min on 2 cores)"
  start=$SECONDS
  # Its own module: its dependency graph must not be unified with Kubernetes'.
  (cd "$here/prometheus" && CGO_ENABLED=0 go build -ldflags "-s -w" -o "$bin/prometheus" \
    github.com/prometheus/prometheus/cmd/prometheus)
  log "Prometheus built in $((SECONDS - start))s"
fi

# sshd for the Git-over-SSH tests: extracted from Debian's packages into the cache, never
# installed, so no system service is started (it would listen on 0.0.0.0:22).
if [[ ! -x "$bin/sshd" ]]; then
  log "extracting sshd from Debian's openssh-server package"
  debs="$out/debs"; mkdir -p "$debs"
  (cd "$debs" && apt-get download openssh-server libwrap0 >/dev/null 2>&1) || {
    apt-get update -qq >/dev/null 2>&1
    (cd "$debs" && apt-get download openssh-server libwrap0 >/dev/null 2>&1)
  }
  for d in "$debs"/*.deb; do dpkg -x "$d" "$out/sshd-root"; done
  libdir="$(dirname "$(find "$out/sshd-root" -name 'libwrap.so.0*' | head -n1)")"
  cat > "$bin/sshd" <<SSHD
#!/bin/sh
LD_LIBRARY_PATH="$libdir" exec "$out/sshd-root/usr/sbin/sshd" "\$@"
SSHD
  chmod +x "$bin/sshd"
fi

if [[ ! -x "$bin/gitea" ]]; then
  gitea_dir="$("$here/build-gitea.sh")"
  ln -sfn "$gitea_dir/share" "$bin/gitea-share"
  ln -sfn "$gitea_dir/bin/gitea" "$bin/gitea"
fi

touch "$out/.complete"
echo "$bin"
