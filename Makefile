# The two commands the README promises:
#   make run   - Muster's main job on its embedded default: the trace simulator on a synthetic
#                Philly-like workload, Muster against FIFO and per-pod greedy baselines
#   make test  - every test: formatting, lints, unit, property, integration and end-to-end tests
#                on a real local control plane (built from Go modules on first use)
.PHONY: run test lint tools bench demo crds

run:
	cargo run --release -p muster-sim --

test: tools lint
	cargo test --workspace --all-targets

tools:
	bash tests/tools/build.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

bench:
	cargo bench -p muster-core --bench placement

crds:
	cargo run -q -p muster-crds --bin muster-crdgen

# A local control plane with 16 simulated 8-GPU nodes (Ctrl-C tears it down).
demo:
	cargo run --release -p muster-testcluster --bin muster-cluster -- up --nodes 16 --fixture dgx-a100 --scheduler
