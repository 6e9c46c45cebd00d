#!/usr/bin/env bash
# For a session whose task has a GPU machine (device tool): one prepared run that prints every
# field of every GPU through NVML and times NVML against nvidia-smi per sample.
# Build here first:  cargo build --release --bin tap-agent && cargo bench -p tap-agent --bench agent --no-run
# then run this script on the device with target/release carried (it needs no network or AWS).
set -uo pipefail
cd "$(dirname "$0")/.."
agent=target/release/tap-agent
bench=$(ls -t target/release/deps/agent-* 2>/dev/null | grep -v '\.d$' | head -n1)
echo "== driver =="; nvidia-smi --query-gpu=index,name,driver_version,pci.bus_id --format=csv || true
echo "== tap-agent run --once (NVML) =="; "$agent" run --once
echo "== tap-agent run --once, again (static facts cached, dynamic fields re-read) =="; "$agent" run --once | head -n 3
echo "== benchmark: cost per sample, NVML vs nvidia-smi =="
if [[ -n "$bench" ]]; then "$bench" --bench 2>&1 | sed -n '/== 1/,/== 2/p'; else echo "bench binary not built"; fi
