#!/usr/bin/env bash
# `make image`: builds the root Dockerfile into an OCI archive with buildah, without a Docker
# daemon and without pulling anything. The binaries are built here (release), their runtime root
# filesystem staged by image/rootfs.sh, and buildah builds the Dockerfile's `prebuilt` path from
# that (`--build-arg BINARIES=prebuilt`; the Rust stage is skipped). buildah keeps its storage
# under the target directory (vfs driver, chroot isolation), so it needs no daemon, overlay
# mounts or user namespaces; it does need root, as chroot does.
#
# MUSTER_IMAGE_PROFILE=debug packs debug builds instead (tests/chart/tests/image.rs does, as the
# test run has built them already; a release build would add ~10 minutes on 2 cores).
#
# Output: ${CARGO_TARGET_DIR:-target}/image/muster.oci.tar (an OCI image layout archive, reference
# the workspace version), loadable with `podman load -i` or `skopeo copy oci-archive:...`.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$PWD/target}
work=$target/image
command -v buildah >/dev/null || {
  echo "image: needs buildah (Debian: apt-get install buildah)" >&2
  exit 1
}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
[ -n "$version" ] || { echo "image: no workspace version in Cargo.toml" >&2; exit 1; }
bins=(muster-scheduler muster-node-agent muster-device-plugin)

packages=()
for b in "${bins[@]}"; do packages+=(-p "$b"); done
profile=${MUSTER_IMAGE_PROFILE:-release}
case $profile in
  release) cargo build --release --locked "${packages[@]}"; out=$target/release ;;
  debug) cargo build --locked "${packages[@]}"; out=$target/debug ;;
  *) echo "image: MUSTER_IMAGE_PROFILE must be release or debug, not '$profile'" >&2; exit 2 ;;
esac
mkdir -p "$work/context"
sh image/rootfs.sh "$work/context/rootfs" "${bins[@]/#/$out/}"

store=(--root "$work/storage" --runroot "$work/run" --storage-driver vfs)
tag=localhost/muster:$version
# --timestamp 0: the same binaries give the same layer and image digest.
buildah "${store[@]}" build --quiet --isolation chroot --timestamp 0 \
  --build-arg BINARIES=prebuilt -f "$PWD/Dockerfile" -t "$tag" "$work/context" >/dev/null
rm -f "$work/muster.oci.tar"
buildah "${store[@]}" push --quiet "$tag" "oci-archive:$work/muster.oci.tar:$version"
# Only the archive is kept: vfs holds full copies of every layer.
buildah "${store[@]}" rmi --all >/dev/null 2>&1 || true

echo "image: $work/muster.oci.tar ($tag, $profile build), $(du -h "$work/muster.oci.tar" | cut -f1) compressed," \
  "$(du -sh "$work/context/rootfs" | cut -f1) unpacked"
