#!/usr/bin/env bash
# For a session whose task has a GPU machine (device tool): one prepared run, ~2 minutes, that
#  1. prints every field of every GPU through NVML and times NVML against nvidia-smi per sample,
#  2. subscribes to real NVML XID/ECC events (and the kernel log) for 30 s: the event path works,
#  3. runs the daemon with health checks on the real GPUs for 20 s (CloudWatch unreachable: it
#     spools) and prints the health verdict it kept.
# Build here first:  cargo build --release --bin tap-agent && cargo bench -p tap-agent --bench agent --no-run
# then run this script on the device with target/release carried (it needs no network or AWS).
set -uo pipefail
cd "$(dirname "$0")/.."
agent=target/release/tap-agent
bench=$(ls -t target/release/deps/agent-* 2>/dev/null | grep -v '\.d$' | head -n1)
work=$(mktemp -d)
cat > "$work/agent.toml" <<TOML
[aws]
region = "us-east-1"
instance_id = "i-0device"
[spool]
dir = "$work/spool"
[health]
state_file = "$work/health.json"
on_fatal = "dry-run"
[spot]
enabled = false
[node]
runtime_dir = "$work/run"
TOML
echo "== driver =="; nvidia-smi --query-gpu=index,name,driver_version,pci.bus_id --format=csv || true
echo "== tap-agent run --once (NVML) =="; "$agent" run --once
echo "== tap-agent run --once, again (static facts cached, dynamic fields re-read) =="; "$agent" run --once | head -n 3
echo "== benchmark: cost per sample, NVML vs nvidia-smi =="
if [[ -n "$bench" ]]; then "$bench" --bench 2>&1 | sed -n '/== 1/,/== 2/p'; else echo "bench binary not built"; fi
echo "== NVML events, 30 s (expect 'subscribed to NVML XID and ECC events' and, on a healthy GPU, 0 events) =="
"$agent" --config "$work/agent.toml" events --seconds 30 2>&1 | tail -n 20
echo "== daemon with health checks, 20 s =="
AWS_EC2_METADATA_DISABLED=true AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x AWS_ENDPOINT_URL=http://127.0.0.1:9 \
  timeout -s TERM 20 "$agent" --config "$work/agent.toml" run 2>&1 | grep -v '"DEBUG"' | tail -n 12
echo "== tap-agent health =="; "$agent" --config "$work/agent.toml" health
