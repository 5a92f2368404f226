#!/usr/bin/env bash
# Builds the controller image without a container engine (`make image`):
#   the release binary, with the shared libraries it links (glibc, OpenSSL, zlib: the same
#   set as distroless/cc), static helm and kustomize built from Go modules, CA
#   certificates, static sops, a non-root user 65532 and a writable /tmp, as one layer; assembled with
#   crane on a throwaway loopback registry and saved as a tarball:
#
#     target/image/gantry.tar     (crane push target/image/gantry.tar REGISTRY/PATH:TAG)
#
# Entrypoint /usr/local/bin/gantry, command `controller`, user 65532:65532.
# The Dockerfile at the repository root builds the same image on a machine with an engine.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
source "$repo/tests/cluster/versions.env"
# kustomize for the image: v5.7.1 is the newest that builds with Go 1.26 (v5.8 needs 1.27).
# Pinned here, not in versions.env, whose every change rebuilds the test cluster's tools.
KUSTOMIZE_VERSION=v5.7.1
# sops decrypts SOPS-encrypted manifests (spec.decryption); the version the tests use.
SOPS_VERSION=v3.13.3
bin="$("$repo/tests/cluster/build.sh")"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)"
out="$repo/target/image"
log() { echo "image: $*" >&2; }

# helm and kustomize, static (CGO off), cached by version.
cache_root="${GANTRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gantry}"
tools="$cache_root/image-tools-$HELM_VERSION-$KUSTOMIZE_VERSION"
if [[ ! -x "$tools/kustomize" || ! -x "$tools/helm" || ! -x "$tools/sops" ]]; then
  log "building helm $HELM_VERSION, kustomize $KUSTOMIZE_VERSION and sops $SOPS_VERSION from Go modules"
  mkdir -p "$tools"
  CGO_ENABLED=0 GOFLAGS= GOBIN="$tools" go install -trimpath -ldflags "-s -w" \
    "github.com/getsops/sops/v3/cmd/sops@$SOPS_VERSION"
  CGO_ENABLED=0 GOFLAGS= GOBIN="$tools" go install -trimpath -ldflags "-s -w" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  CGO_ENABLED=0 GOFLAGS= GOBIN="$tools" go install -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
fi

log "building the release binary"
(cd "$repo" && cargo build --release --locked --bin gantry)
gantry="$repo/target/release/gantry"

rm -rf "$out/rootfs" && mkdir -p "$out/rootfs"
root="$out/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot"
install -m 0755 "$gantry" "$root/usr/local/bin/gantry"
install -m 0755 "$tools/helm" "$tools/kustomize" "$tools/sops" "$root/usr/local/bin/"
# The shared libraries of the binary, at the paths the loader looks them up.
ldd "$gantry" | awk '/=> \//{print $3} /^\t\/lib/{print $1}' | sort -u | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
chmod 1777 "$root/tmp"

# One layer, reproducible: sorted, fixed times, owned by root except the user's home.
python3 - "$root" "$out/layer.tar" <<'PY'
import os, sys, tarfile
root, dest = sys.argv[1], sys.argv[2]
def fix(ti):
    ti.mtime = 0
    ti.uid = ti.gid = 65532 if ti.name.startswith("home/nonroot") else 0
    ti.uname = ti.gname = ""
    return ti
with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            path = os.path.join(dirpath, name)
            tar.add(path, arcname=os.path.relpath(path, root), recursive=False, filter=fix)
PY

# Assemble on a throwaway registry (crane mutates images in registries only).
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$bin/crane" registry serve --address "127.0.0.1:$port" >"$out/registry.log" 2>&1 &
registry=$!
trap 'kill $registry 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
  sleep 0.1
done
ref="127.0.0.1:$port/gantry:$version"
"$bin/crane" append --oci-empty-base --platform linux/amd64 -f "$out/layer.tar" -t "$ref" >/dev/null
"$bin/crane" mutate "$ref" --set-platform linux/amd64 \
  --entrypoint /usr/local/bin/gantry --cmd controller --user 65532:65532 --workdir / \
  --env PATH=/usr/local/bin --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --label org.opencontainers.image.source=https://github.com/gantry-dev/gantry \
  --label "org.opencontainers.image.version=$version" -t "$ref" >/dev/null
"$bin/crane" pull "$ref" "$out/gantry.tar"
digest="$("$bin/crane" digest "$ref")"
echo "$digest" > "$out/digest"
log "built $out/gantry.tar ($digest, $(du -h "$out/gantry.tar" | cut -f1)); push it with: make image-push IMAGE=<registry>/<path>/gantry:$version"
