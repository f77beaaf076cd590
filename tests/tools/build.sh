#!/usr/bin/env bash
# Builds the pinned Kubernetes control-plane tools from Go modules, if missing, into
#   ${MUSTER_TOOLS_DIR:-$HOME/.cache/muster/tools}/<key>/bin
# and prints that bin directory on stdout (the only stdout line; progress goes to stderr).
#
#   bash tests/tools/build.sh [all|core]
#
# `core` builds what the Rust test harness needs (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok); `all` (default) adds helm, promtool and prometheus. The cache lives
# outside the repo so CI clones on one machine share it; <key> hashes the pinned versions and the
# committed go.mod/go.sum files, so bumping a version builds into a fresh directory.
set -euo pipefail

# Bump when the build flags below change in a way that should invalidate cached binaries.
FLAGS_REV=1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
what="${1:-all}"
case "$what" in all | core) ;; *) echo "usage: build.sh [all|core]" >&2; exit 2 ;; esac

log() { echo "build.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

key="$K8S_VERSION-$(cd "$here" && cat versions.env ./*/go.mod ./*/go.sum <(echo "$FLAGS_REV") |
  sha256sum | cut -c1-12)"
root="${MUSTER_TOOLS_DIR:-${XDG_CACHE_HOME:-${HOME:?set HOME or MUSTER_TOOLS_DIR}/.cache}/muster/tools}"
out="$root/$key"
bin="$out/bin"

core_tools=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
all_tools=("${core_tools[@]}" helm promtool prometheus)
if [ "$what" = core ]; then wanted=("${core_tools[@]}"); else wanted=("${all_tools[@]}"); fi
# kubectl, from the control plane's own module and version: `make demo` and the demo's e2e test
# drive the cluster with it (and kubectl-muster as its plugin).
wanted+=(kubectl)

complete() {
  local t
  for t in "${wanted[@]}"; do [ -x "$bin/$t" ] || return 1; done
  [ -s "$out/stages/fast.yaml" ]
}

# Fast path: nothing to build, no Go needed (the harness calls this before every cluster).
if complete; then echo "$bin"; exit 0; fi

# The Go toolchain: $MUSTER_GO, else `go` on PATH, else the official tarball's location (CI
# environments do not always put /usr/local/go/bin on PATH).
go_bin="${MUSTER_GO:-$(command -v go || echo /usr/local/go/bin/go)}"
[ -x "$go_bin" ] ||
  die "the Go toolchain ('go', >= 1.26) was not found (PATH, /usr/local/go/bin, \$MUSTER_GO=${MUSTER_GO:-unset}); it is needed once to build ${wanted[*]} into $bin (see tests/tools/README.md)"
export PATH="$(dirname "$go_bin"):$PATH"

mkdir -p "$bin" "$out/stages"
# Serialise concurrent builders (parallel test processes, CI jobs): the loser waits, then finds
# the binaries present.
exec 9>"$root/.build.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
else
  until mkdir "$root/.build.lock.d" 2>/dev/null; do sleep 2; done
  trap 'rmdir "$root/.build.lock.d"' EXIT
fi
if complete; then echo "$bin"; exit 0; fi

export CGO_ENABLED=0 GOFLAGS=-mod=readonly
jobs="${MUSTER_GO_BUILD_JOBS:-2}"

# Module download info (Dir, Time) of a pinned dependency, read from the wrapper module.
mod_field() { # dir module field
  (cd "$here/$1" && go list -m -f "{{.$3}}" "$2")
}
commit_time() { # dir module -> UTC time the proxy reports for that version (reproducible)
  mod_field "$1" "$2" 'Time.UTC.Format "2006-01-02T15:04:05Z"'
}

build() { # module-dir package output-name ldflags
  local dir="$1" pkg="$2" name="$3" ldflags="$4"
  [ -x "$bin/$name" ] && return 0
  log "building $name ($pkg) ..."
  local start=$SECONDS
  (cd "$here/$dir" && go build -p "$jobs" -trimpath -ldflags "-s -w $ldflags" -o "$bin/.$name.tmp" "$pkg") ||
    die "go build of $name failed (module $here/$dir)"
  mv -f "$bin/.$name.tmp" "$bin/$name"
  log "built $name in $((SECONDS - start))s"
}

# --- etcd
etcd_ld="-X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION"
# --- Kubernetes: version vars are read by /version, and Helm's kubeVersion checks rely on them.
k8s_minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
k8s_date="$(commit_time kubernetes k8s.io/kubernetes)"
k8s_ld=""
for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  k8s_ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$k8s_minor"
  k8s_ld+=" -X $p.gitTreeState=clean -X $p.buildDate=$k8s_date"
done
# --- kwok
kwok_ld="-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v} -X sigs.k8s.io/kwok/pkg/consts.BinaryName=kwok"
kwok_ld+=" -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${K8S_VERSION#v}"

build etcd go.etcd.io/etcd/server/v3 etcd "$etcd_ld"
for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  build kubernetes "k8s.io/kubernetes/cmd/$c" "$c" "$k8s_ld"
done
build kwok sigs.k8s.io/kwok/cmd/kwok kwok "$kwok_ld"

# kwok's "fast" Stage set (node-initialize, node-heartbeat-with-lease, pod-ready, pod-complete,
# pod-delete), copied from the module. pod-complete gets the delay knob of kwok's "general"
# set, so a Job pod may carry `pod-complete.stage.kwok.x-k8s.io/delay: "5s"` to stay Running a
# while; without the annotation it completes at once as in the upstream fast set.
if [ ! -s "$out/stages/fast.yaml" ]; then
  kwok_dir="$(mod_field kwok sigs.k8s.io/kwok Dir)"
  [ -d "$kwok_dir/kustomize/stage" ] || die "kwok module has no kustomize/stage dir ($kwok_dir)"
  s="$kwok_dir/kustomize/stage"
  {
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
      pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
      echo "---"
      if [ "$f" = pod/fast/pod-complete.yaml ]; then
        grep -q '^  next:$' "$s/$f" || die "unexpected layout of $s/$f"
        sed '/^  next:$/i\
  delay:\
    durationMilliseconds: 0\
    durationFrom:\
      expressionFrom: '"'"'.metadata.annotations["pod-complete.stage.kwok.x-k8s.io/delay"]'"'"'' "$s/$f"
      else
        cat "$s/$f"
      fi
    done
  } >"$out/stages/.fast.yaml.tmp"
  mv -f "$out/stages/.fast.yaml.tmp" "$out/stages/fast.yaml"
  log "wrote kwok stages to $out/stages/fast.yaml"
fi

if [ "$what" = all ]; then
  # --- helm: its Makefile derives the assumed Kubernetes version from its client-go module.
  helm_cg="$(mod_field helm k8s.io/client-go Version)"
  helm_cg="${helm_cg#v}"
  helm_kmaj=$(($(echo "$helm_cg" | cut -d. -f1) + 1))
  helm_kmin="$(echo "$helm_cg" | cut -d. -f2)"
  helm_ld="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    helm_ld+=" -X $p.k8sVersionMajor=$helm_kmaj -X $p.k8sVersionMinor=$helm_kmin"
  done
  build helm helm.sh/helm/v3/cmd/helm helm "$helm_ld"

  # --- promtool and the prometheus server: module v0.3MM.P is Prometheus v3.MM.P.
  prom_minor="$(echo "$PROMETHEUS_MODULE_VERSION" | cut -d. -f2)"
  prom_version="3.$((10#${prom_minor:1})).$(echo "$PROMETHEUS_MODULE_VERSION" | cut -d. -f3)"
  pv=github.com/prometheus/common/version
  prom_ld="-X $pv.Version=$prom_version -X $pv.Branch=HEAD -X $pv.BuildUser=muster"
  prom_ld+=" -X $pv.BuildDate=$(commit_time promtool github.com/prometheus/prometheus)"
  build promtool github.com/prometheus/prometheus/cmd/promtool promtool "$prom_ld"
  # The server's web UI assets are embedded only with the `builtinassets` tag (upstream's
  # Makefile compresses them first); the tests use its HTTP API, which needs none.
  build promtool github.com/prometheus/prometheus/cmd/prometheus prometheus "$prom_ld"
fi

complete || die "some tools are still missing in $bin"
echo "$bin"
