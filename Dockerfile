# syntax=docker/dockerfile:1
# One image with every Muster binary; the Helm chart picks the binary by `command`.
#   docker build -t ghcr.io/muster-dev/muster:0.1.0 .
# protoc comes from the protoc-bin-vendored crate, so the builder needs nothing beyond Rust.
#
# The runtime stage is `scratch` plus what the binaries need, staged by image/rootfs.sh: the
# binaries, the shared libraries ldd names (glibc, libgcc_s, the loader), CA certificates and
# /etc/passwd. No shell, no package manager. The node agent dlopens the driver's libnvidia-ml.so.1,
# which the NVIDIA container runtime mounts into the image's library directory.
#
# Without a Docker daemon or registry (`make image`, image/build.sh): buildah builds this file with
# `--build-arg BINARIES=prebuilt` from a context holding `rootfs/`, staged by the same script from
# binaries built on a Debian 12 host (the builder image's Debian), so the Rust stage is skipped
# and nothing is pulled.
#
# The builder image is pinned as tag@digest (multi-arch index digests): a rebuild starts from the
# same bytes until this file changes, and the tag says what the digest is. No registry was
# reachable when it was pinned (2026-12-02), so the digest is one written in public
# repositories as the digest of exactly that tag:
# - rust:1.88-bookworm@sha256:af306cfa...: a BuildKit log of 2026-02-26 resolving
#   docker.io/library/rust:1.88-bookworm to it, and many Dockerfiles (also as rust:1.88.0-bookworm,
#   "image index digest"). 1.88 gets no more rebuilds, so it no longer moves.
# To refresh (and check before a release), read the index digest of the tag and replace it here:
#   crane digest rust:1.88-bookworm
# or `docker buildx imagetools inspect <image:tag>` (the top-level "Digest:").
# tests/chart/tests/hardening.rs fails on a FROM line without @sha256:<64 hex>.

# `build` (default) compiles in the pinned Rust image; `prebuilt` takes image/build.sh's rootfs/.
ARG BINARIES=build

FROM rust:1.88-bookworm@sha256:af306cfa71d987911a781c37b59d7d67d934f49684058f96cf72079c3626bfe0 AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p muster-scheduler -p muster-node-agent -p muster-device-plugin \
 && sh image/rootfs.sh /out target/release/muster-scheduler target/release/muster-node-agent \
       target/release/muster-device-plugin

FROM scratch AS prebuilt
COPY rootfs/ /out/

FROM ${BINARIES} AS binaries

# Runs as the unprivileged user 65532; the chart runs the node DaemonSet as uid 0 because the
# kubelet's sockets are root-owned.
FROM scratch
LABEL org.opencontainers.image.title="muster" \
      org.opencontainers.image.description="Gang batch scheduler and GPU resource manager for Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binaries /out/ /
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/muster-scheduler"]
