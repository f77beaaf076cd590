# syntax=docker/dockerfile:1
# One image with every Muster binary; the Helm chart picks the binary by `command`.
#   docker build -t ghcr.io/muster-dev/muster:0.1.0 .
# protoc comes from the protoc-bin-vendored crate, so the builder needs nothing beyond Rust.

FROM rust:1.88-bookworm AS build
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
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="muster" \
      org.opencontainers.image.description="Gang batch scheduler and GPU resource manager for Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/muster-scheduler"]
