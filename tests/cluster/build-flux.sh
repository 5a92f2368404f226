#!/usr/bin/env bash
# Builds the benchmarks' peer, Flux (source-controller and kustomize-controller), from its
# Go modules, once, into a cache directory keyed by the pins below. Prints the directory:
# bin/ holds the two controllers, crds/ their CustomResourceDefinitions (from the modules).
#
# Each controller's go.mod replaces its api module with ./api, a nested module that the
# module zip leaves out, so `go install <module>@<version>` refuses it: the module is copied
# out of the module cache and its api module (same version) put where the replace expects.
# v1.9.6 is the newest release whose go.mod the installed Go (1.26) accepts. The module
# proxy reachable here refuses github.com/fluxcd/pkg/artifact v0.18.3 (403), which
# source-controller v1.9.6 asks for; its v0.18.0 (same minor version) is used instead.
set -euo pipefail
FLUX_SOURCE_VERSION=v1.9.6
FLUX_KUSTOMIZE_VERSION=v1.9.6

cache_root="${GANTRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gantry}"
out="$cache_root/flux-source-$FLUX_SOURCE_VERSION-kustomize-$FLUX_KUSTOMIZE_VERSION"
log() { echo "build-flux.sh: $*" >&2; }

if [[ -f "$out/.complete" ]]; then
  echo "$out"
  exit 0
fi
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
mkdir -p "$out/bin" "$out/crds"

module_dir() { go mod download -json "$1@$2" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'; }

build() {
  local name="$1" version="$2"
  shift 2
  if [[ -x "$out/bin/$name" ]]; then
    return
  fi
  local src api work
  src="$(module_dir "github.com/fluxcd/$name" "$version")"
  api="$(module_dir "github.com/fluxcd/$name/api" "$version")"
  [[ -n "$src" && -n "$api" ]] || { log "cannot download $name $version"; exit 1; }
  work="$(mktemp -d)"
  trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' RETURN
  cp -r "$src" "$work/src"
  chmod -R u+w "$work/src"
  rm -rf "$work/src/api"
  cp -r "$api" "$work/src/api"
  chmod -R u+w "$work/src/api"
  for replace in "$@"; do
    (cd "$work/src" && go mod edit -replace "$replace")
  done
  log "building $name $version (a few minutes, once)"
  (cd "$work/src" && go build -trimpath -ldflags "-s -w" -o "$out/bin/$name.tmp" .)
  mv "$out/bin/$name.tmp" "$out/bin/$name"
  cp "$src"/config/crd/bases/*.yaml "$out/crds/"
}

build source-controller "$FLUX_SOURCE_VERSION" \
  github.com/fluxcd/pkg/artifact=github.com/fluxcd/pkg/artifact@v0.18.0
build kustomize-controller "$FLUX_KUSTOMIZE_VERSION"
touch "$out/.complete"
echo "$out"
