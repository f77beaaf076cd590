# The two commands the README promises:
#   make run   - Muster's main job on its embedded default (the trace simulator, synthetic Philly-like workload)
#   make test  - every test: unit, integration, end-to-end on a real local control plane
.PHONY: run test lint bench tools demo

run:
	cargo run --release -p muster-sim --

test: lint
	cargo test --workspace --all-targets

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

bench:
	cargo bench -p muster-core --bench placement
