# syntax=docker/dockerfile:1
# One image with every Muster binary; the Helm chart picks the binary by `command`.
#   docker build -t ghcr.io/muster-dev/muster:0.1.0 .
# protoc comes from the protoc-bin-vendored crate, so the builder needs nothing beyond Rust.
#
# Both base images are pinned as tag@digest (multi-arch index digests): a rebuild starts from the
# same bytes until this file changes, and the tag says what the digest is. No registry was
# reachable when they were pinned (2026-12-02), so each digest is one written in public
# repositories as the digest of exactly that tag:
# - rust:1.88-bookworm@sha256:af306cfa...: a BuildKit log of 2026-02-26 resolving
#   docker.io/library/rust:1.88-bookworm to it, and many Dockerfiles (also as rust:1.88.0-bookworm,
#   "image index digest"). 1.88 gets no more rebuilds, so it no longer moves.
# - gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79...: the most recent digest of that tag
#   found in public Dockerfiles (more than ten repositories, next to rust:1.98 builders, one noting
#   it is the multi-platform index). :nonroot is rebuilt for Debian security updates: refresh it.
# To refresh (and check before a release), read the index digest of each tag and replace it here:
#   crane digest rust:1.88-bookworm
#   crane digest gcr.io/distroless/cc-debian12:nonroot
# or `docker buildx imagetools inspect <image:tag>` (the top-level "Digest:").
# tests/chart/tests/hardening.rs fails on a FROM line without @sha256:<64 hex>.

FROM rust:1.88-bookworm@sha256:af306cfa71d987911a781c37b59d7d67d934f49684058f96cf72079c3626bfe0 AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p muster-scheduler -p muster-node-agent -p muster-device-plugin \
 && mkdir -p /out \
 && cp target/release/muster-scheduler target/release/muster-node-agent \
       target/release/muster-device-plugin /out/

# glibc (dlopen of the driver's libnvidia-ml, injected by the NVIDIA container runtime), no shell.
# Runs as the distroless nonroot user (65532); the chart runs the node DaemonSet as uid 0
# because the kubelet's sockets are root-owned.
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
LABEL org.opencontainers.image.title="muster" \
      org.opencontainers.image.description="Gang batch scheduler and GPU resource manager for Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/muster-scheduler"]
