#!/usr/bin/env bash
# Builds the benchmark's extra competitor, scheduler-plugins' kube-scheduler (Coscheduling
# plugin), from the pinned wrapper module tests/tools/bench/scheduler-plugins, if missing, into
#   ${MUSTER_TOOLS_DIR:-$HOME/.cache/muster/tools}/bench-<key>/bin/kube-scheduler-plugins
# next to <key dir>/crds/coscheduling-podgroup.yaml (the PodGroup CRD from the same module),
# and prints that bin directory on stdout (the only stdout line; progress goes to stderr).
#
#   bash tests/tools/build-bench.sh [--check]
#
# --check only reports: exit 0 and print the directory when built, exit 1 otherwise.
# Kept apart from build.sh on purpose: its module sits two levels below tests/tools, outside
# build.sh's cache key, so changing it never rebuilds the control plane.
set -euo pipefail

FLAGS_REV=1
SCHEDULER_PLUGINS_VERSION=v0.34.7

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mod="$here/bench/scheduler-plugins"
log() { echo "build-bench.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

key="sp$SCHEDULER_PLUGINS_VERSION-$(cat "$mod/go.mod" "$mod/go.sum" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-12)"
root="${MUSTER_TOOLS_DIR:-${XDG_CACHE_HOME:-${HOME:?set HOME or MUSTER_TOOLS_DIR}/.cache}/muster/tools}"
out="$root/bench-$key"
bin="$out/bin"
crd="$out/crds/coscheduling-podgroup.yaml"

complete() { [ -x "$bin/kube-scheduler-plugins" ] && [ -s "$crd" ]; }
if complete; then echo "$bin"; exit 0; fi
[ "${1:-}" = --check ] && { log "not built yet ($bin)"; exit 1; }

go_bin="${MUSTER_GO:-$(command -v go || echo /usr/local/go/bin/go)}"
[ -x "$go_bin" ] ||
  die "the Go toolchain ('go') was not found (PATH, /usr/local/go/bin, \$MUSTER_GO); it is needed once to build scheduler-plugins into $bin"
export PATH="$(dirname "$go_bin"):$PATH"

mkdir -p "$bin" "$out/crds"
exec 9>"$root/.build-bench.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
else
  until mkdir "$root/.build-bench.lock.d" 2>/dev/null; do sleep 2; done
  trap 'rmdir "$root/.build-bench.lock.d"' EXIT
fi
if complete; then echo "$bin"; exit 0; fi

export CGO_ENABLED=0 GOFLAGS=-mod=readonly
jobs="${MUSTER_GO_BUILD_JOBS:-2}"
# `go list -m` does not download: on a cold module cache .Dir is empty (the CRD path became
# /manifests/...). Download the module first; the build needs it anyway.
(cd "$mod" && go mod download sigs.k8s.io/scheduler-plugins) || die "downloading sigs.k8s.io/scheduler-plugins failed"
sp_dir="$(cd "$mod" && go list -m -f '{{.Dir}}' sigs.k8s.io/scheduler-plugins)"
[ -n "$sp_dir" ] || die "sigs.k8s.io/scheduler-plugins has no module directory after download"
k8s_ver="$(cd "$mod" && go list -m -f '{{if .Replace}}{{.Replace.Version}}{{else}}{{.Version}}{{end}}' k8s.io/kubernetes)"
k8s_date="$(cd "$mod" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' sigs.k8s.io/scheduler-plugins)"

if [ ! -x "$bin/kube-scheduler-plugins" ]; then
  # The version of the Kubernetes libraries it is built from: component-base derives the
  # binary's emulation version from gitVersion, and a plugins release number (v0.34.7, what
  # upstream's Makefile stamps) fails its check ("emulation version 0.34 is not between").
  k8s_minor="$(echo "$k8s_ver" | cut -d. -f2)"
  ld="-s -w"
  for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ld+=" -X $p.gitVersion=$k8s_ver -X $p.gitMajor=1 -X $p.gitMinor=$k8s_minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=$k8s_date"
  done
  log "building kube-scheduler-plugins (scheduler-plugins $SCHEDULER_PLUGINS_VERSION, Kubernetes $k8s_ver) ..."
  start=$SECONDS
  (cd "$mod" && go build -p "$jobs" -trimpath -ldflags "$ld" -o "$bin/.kube-scheduler-plugins.tmp" \
    sigs.k8s.io/scheduler-plugins/cmd/scheduler) || die "go build failed (module $mod)"
  mv -f "$bin/.kube-scheduler-plugins.tmp" "$bin/kube-scheduler-plugins"
  log "built kube-scheduler-plugins in $((SECONDS - start))s"
fi
src="$sp_dir/manifests/coscheduling/crd.yaml"
[ -s "$src" ] || die "no PodGroup CRD at $src"
# One document; drop the leading separator so it parses as a single YAML document.
sed '1{/^---$/d}' "$src" >"$crd.tmp" && mv -f "$crd.tmp" "$crd"

complete || die "kube-scheduler-plugins or its CRD is still missing in $out"
echo "$bin"
