#!/usr/bin/env bash
# Builds the forge of the notification tests, Gitea, from its Go module, once, into a cache
# directory keyed by the version below. Prints the directory: bin/gitea, and share/ holding
# the module's templates and options (Gitea reads them from its work path at run time; the
# web UI's JavaScript bundle is not built, the API and smart HTTP need none of it).
#
# The module is built as the main module (its go.mod's replace lines then apply), with
# SQLite (cgo) as its database.
set -euo pipefail
GITEA_VERSION=v1.26.0

cache_root="${GANTRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gantry}"
out="$cache_root/gitea-$GITEA_VERSION"
log() { echo "build-gitea.sh: $*" >&2; }

if [[ -f "$out/.complete" ]]; then
  echo "$out"
  exit 0
fi
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=1
src="$(go mod download -json "code.gitea.io/gitea@$GITEA_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[[ -n "$src" ]] || { log "cannot download code.gitea.io/gitea $GITEA_VERSION"; exit 1; }
mkdir -p "$out/bin" "$out/share"
work="$(mktemp -d)"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
cp -r "$src" "$work/src"
chmod -R u+w "$work/src"
log "building gitea $GITEA_VERSION (several minutes, once)"
(cd "$work/src" && go build -trimpath -tags "sqlite sqlite_unlock_notify" \
  -ldflags "-s -w -X main.Version=${GITEA_VERSION#v}" \
  -o "$out/bin/gitea.tmp" .)
mv "$out/bin/gitea.tmp" "$out/bin/gitea"
rm -rf "$out/share/templates" "$out/share/options" "$out/share/public"
cp -r "$work/src/templates" "$work/src/options" "$out/share/"
mkdir -p "$out/share/public" && cp -r "$work/src/public/." "$out/share/public/" 2>/dev/null || true
touch "$out/.complete"
echo "$out"
