# The two commands the README promises:
#   make run   - Muster's main job on its embedded default: the trace simulator on a synthetic
#                Philly-like workload, Muster against FIFO and per-pod greedy baselines
#   make test  - every test: formatting, lints, unit, property, integration and end-to-end tests
#                on a real local control plane (built from Go modules on first use)
.PHONY: run test lint tools operators bench demo crds image

run:
	cargo run --release -p muster-sim --

# Job operators the e2e suites run (tests/tools/operators/<name>/operator.env).
OPERATORS := $(patsubst tests/tools/operators/%/operator.env,%,$(wildcard tests/tools/operators/*/operator.env))

# The operators' cold builds (~20 min on 2 cores) run niced in the background while lint and
# the tests compile and run; an e2e test that needs one waits on the build lock. Warm: instant.
test: tools
	@mkdir -p target
	@( for op in $(OPERATORS); do nice -n 10 bash tests/tools/build-operator.sh $$op >/dev/null || echo "building $$op failed"; done >target/build-operators.log 2>&1 & )
	$(MAKE) lint
	cargo test --workspace --all-targets

# Every job operator, built in the foreground.
operators:
	@for op in $(OPERATORS); do bash tests/tools/build-operator.sh $$op >/dev/null || exit 1; done

tools:
	bash tests/tools/build.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

bench:
	cargo bench -p muster-core --bench placement

crds:
	cargo run -q -p muster-crds --bin muster-crdgen

# Muster whole on a local control plane: kwok GPU nodes of three shapes, kube-scheduler's
# `muster` profile, the extender, a node agent and a device plugin per node on the fake NVML, the
# examples submitted with kubectl (built with the control plane) and `kubectl muster` on PATH.
# Ctrl-C tears it down; `make demo DEMO_ARGS=--once` runs, prints and exits.
DEMO_PACKAGES := muster-testcluster muster-scheduler muster-node-agent muster-device-plugin \
	kubectl-muster muster-fake-nvml
demo:
	cargo build --release $(addprefix -p ,$(DEMO_PACKAGES))
	$${CARGO_TARGET_DIR:-target}/release/muster-cluster demo $(DEMO_ARGS)

# The root Dockerfile built into target/image/muster.oci.tar by buildah: no Docker daemon, no
# pulls (the runtime stage is scratch plus what the binaries need). tests/chart/tests/image.rs
# builds it in `make test` and runs each binary from the unpacked image under chroot.
image:
	bash image/build.sh
