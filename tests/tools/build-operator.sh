#!/usr/bin/env bash
# Builds one pinned job operator (tests/tools/operators/<name>/) from its Go module, if missing,
# into
#   ${MUSTER_TOOLS_DIR:-$HOME/.cache/muster/tools}/operators/<name>-<key>/
#     bin/<name>      the operator binary
#     crds/           its CustomResourceDefinitions, copied as published from its module
#     manifests/      further published manifests named in operator.env (e.g. webhooks)
# and prints that directory on stdout (the only stdout line; progress goes to stderr).
#
#   bash tests/tools/build-operator.sh <name>
#
# <key> hashes versions.env, the operator's operator.env/go.mod/go.sum and FLAGS_REV, so a bump
# builds into a fresh directory. Same conventions as build.sh: a lock file in the cache
# serialises builders, CGO_ENABLED=0 -trimpath, Go from $MUSTER_GO / PATH / /usr/local/go/bin.
set -euo pipefail

# Bump when the build flags or the copied layout change in a way that should invalidate caches.
FLAGS_REV=1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ops="$here/operators"
log() { echo "build-operator.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

name="${1:-}"
[ -n "$name" ] && [ "$#" -eq 1 ] || {
  echo "usage: build-operator.sh <name>   (one of: $(cd "$ops" && ls -d -- */ 2>/dev/null | tr -d / | tr '\n' ' '))" >&2
  exit 2
}
dir="$ops/$name"
[ -f "$dir/operator.env" ] && [ -f "$dir/go.mod" ] ||
  die "no operator '$name' (expected $dir/operator.env and go.mod; see tests/tools/pin-operators.sh)"

# shellcheck source=operators/versions.env
source "$ops/versions.env"
MODULE="" COMMAND="" CRDS="" MANIFESTS="" BINARY=""
# shellcheck disable=SC1091
source "$dir/operator.env"
var="$(echo "$name" | tr 'a-z-' 'A-Z_')_VERSION"
version="${!var:-}"
[ -n "$version" ] || die "$var is not set in $ops/versions.env"
binary="${BINARY:-$name}"
if [ "$COMMAND" = . ]; then pkg="$MODULE"; else pkg="$MODULE/$COMMAND"; fi

key="$version-$(cat "$ops/versions.env" "$dir/operator.env" "$dir/go.mod" "$dir/go.sum" <(echo "$FLAGS_REV") |
  sha256sum | cut -c1-12)"
root="${MUSTER_TOOLS_DIR:-${XDG_CACHE_HOME:-${HOME:?set HOME or MUSTER_TOOLS_DIR}/.cache}/muster/tools}"
out="$root/operators/$name-$key"

complete() { [ -x "$out/bin/$binary" ] && [ -f "$out/.complete" ]; }

# Fast path: nothing to build, no Go needed (the harness calls this before every test).
if complete; then echo "$out"; exit 0; fi

go_bin="${MUSTER_GO:-$(command -v go || echo /usr/local/go/bin/go)}"
[ -x "$go_bin" ] ||
  die "the Go toolchain ('go') was not found (PATH, /usr/local/go/bin, \$MUSTER_GO=${MUSTER_GO:-unset}); it is needed once to build $name into $out (see tests/tools/README.md)"
export PATH="$(dirname "$go_bin"):$PATH"

mkdir -p "$root/operators"
# Serialise concurrent builders (build.sh uses the same lock: one Go build at a time).
exec 9>"$root/.build.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
else
  until mkdir "$root/.build.lock.d" 2>/dev/null; do sleep 2; done
  trap 'rmdir "$root/.build.lock.d"' EXIT
fi
if complete; then echo "$out"; exit 0; fi

export CGO_ENABLED=0 GOFLAGS=-mod=readonly
jobs="${MUSTER_GO_BUILD_JOBS:-2}"
rm -rf "$out"
mkdir -p "$out/bin" "$out/crds" "$out/manifests"

log "building $binary ($pkg@$version) ..."
start=$SECONDS
(cd "$dir" && go build -p "$jobs" -trimpath -ldflags "-s -w" -o "$out/bin/.$binary.tmp" "$pkg") ||
  die "go build of $pkg failed (module $dir)"
mv -f "$out/bin/.$binary.tmp" "$out/bin/$binary"
log "built $binary in $((SECONDS - start))s"

# The published manifests, from the module as downloaded (read-only, never edited). An entry
# `<module>:<path>` names a file or directory of a dependency at the version the operator's
# go.mod selects (e.g. the PodGroup CRD of the gang scheduler it was compiled against), and
# `<module>@<version>:<path>` one of a module at that exact version.
module_dir() { # module
  local d
  d="$(cd "$dir" && go list -m -f '{{.Dir}}' "$1")"
  if [ -z "$d" ]; then
    (cd "$dir" && go mod download "$1") >&2
    d="$(cd "$dir" && go list -m -f '{{.Dir}}' "$1")"
  fi
  [ -d "$d" ] || die "cannot locate the module directory of $1 (from $dir)"
  echo "$d"
}
# `<module>@<version>:<path>`: a module outside the operator's build list (e.g. the gang
# scheduler whose PodGroup CRD the operator writes but whose API module ships no CRDs).
pinned_module_dir() { # module@version
  local d
  d="$(cd "$root" && go mod download -json "$1" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  [ -d "$d" ] || die "cannot download $1 (from $dir)"
  echo "$d"
}
resolve() { # entry -> absolute path
  case "$1" in
    *@*:*) echo "$(pinned_module_dir "${1%%:*}")/${1#*:}" ;;
    *:*) echo "$(module_dir "${1%%:*}")/${1#*:}" ;;
    *) echo "$(module_dir "$MODULE")/$1" ;;
  esac
}
n=0
for p in $CRDS; do
  src="$(resolve "$p")"
  [ -e "$src" ] || die "no $p ($src)"
  while IFS= read -r f; do
    grep -q '^kind: CustomResourceDefinition' "$f" || continue
    cp "$f" "$out/crds/"
    n=$((n + 1))
  done < <(find "$src" -type f \( -name '*.yaml' -o -name '*.yml' \) | sort)
done
[ -z "$CRDS" ] || [ "$n" -gt 0 ] || die "no CustomResourceDefinition found in $CRDS"
for p in $MANIFESTS; do
  src="$(resolve "$p")"
  [ -f "$src" ] || die "no $p ($src)"
  cp "$src" "$out/manifests/"
done
chmod -R u+w "$out/crds" "$out/manifests"
log "copied $n CRDs${MANIFESTS:+ and $MANIFESTS}"
touch "$out/.complete"
echo "$out"
