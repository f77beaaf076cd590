#!/usr/bin/env bash
# Agent cost on the 8-GPU dgx-a100 fixture: CPU time and peak RSS over 60 s at a 1 s collection
# interval (--no-publish, no kubelet socket), then p50/p99 latency of 100 /metrics scrapes.
#
#   cargo build --release -p muster-node-agent -p muster-fake-nvml
#   bash node-agent/scripts/measure.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
agent=target/release/muster-node-agent
lib=$PWD/target/release/libmuster_fake_nvml.so
export MUSTER_FAKE_NVML_FIXTURE=dgx-a100 MUSTER_FAKE_NVML_NODE=measure RUST_LOG=warn
common=(--node-name measure --nvml-lib "$lib" --no-publish --interval 1s
  --pod-resources-socket /nonexistent/kubelet.sock)
out=$(mktemp)
trap 'rm -f "$out"' EXIT

timeout -s INT 60 /usr/bin/time -v "$agent" "${common[@]}" --metrics-addr 127.0.0.1:19511 2>"$out" || true
grep -E 'User time|System time|Maximum resident|Elapsed' "$out"

"$agent" "${common[@]}" --metrics-addr 127.0.0.1:19512 2>/dev/null &
pid=$!
sleep 2
for _ in $(seq 100); do
  curl -s -o /dev/null -w '%{time_total}\n' http://127.0.0.1:19512/metrics
done | sort -n >"$out"
kill -INT "$pid"
wait "$pid" || true
awk '{a[NR]=$1} END {printf "scrapes=%d p50=%.2fms p99=%.2fms\n", NR, a[int(NR*0.5)]*1000, a[int(NR*0.99)]*1000}' "$out"
