#!/usr/bin/env bash
# tap-agent's heap over time (README "tap-agent" benchmark: what grows): runs the release
# agent under heaptrack for MINUTES (default 10) with 8 simulated GPUs at 1 s sampling,
# publishing to moto on loopback, then prints heaptrack's summary and the heap's peak in each
# minute. Needs heaptrack (apt install heaptrack); scripts/bench-agent.sh measures RSS and CPU.
# TAP_AGENT_BIN names an agent binary to use instead of building one (target/release).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
minutes=${MINUTES:-10}
command -v heaptrack >/dev/null && command -v heaptrack_print >/dev/null \
  || { echo "heap-agent: heaptrack is not installed (apt install heaptrack)" >&2; exit 2; }
eval "$(scripts/tools.sh)"
bin=${TAP_AGENT_BIN:-}
if [[ -z $bin ]]; then
  cargo build --release -p tap-agent --quiet
  bin=target/release/tap-agent
fi
work=$(mktemp -d)
cleanup() {
  [[ -n ${agent:-} ]] && kill -TERM "$agent" 2>/dev/null || true
  [[ -n ${moto:-} ]] && kill "$moto" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$TAP_MOTO_SERVER" -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
moto=$!
for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.2; done
cat > "$work/agent.toml" <<EOF
[aws]
region = "us-east-1"
instance_id = "i-0heap"
[metrics]
environment = "bench"
sample_interval_seconds = 1
publish_interval_seconds = 60
[spool]
dir = "$work/spool"
EOF
AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench \
  AWS_EC2_METADATA_DISABLED=true TAP_AGENT_LOG=warn \
  heaptrack -o "$work/heap" "$bin" --config "$work/agent.toml" run --simulate 8 \
  >"$work/heaptrack.out" 2>&1 &
tracker=$!
# The agent heaptrack started: a tap-agent whose command line names this run's config (not
# another agent on the machine, e.g. scripts/bench-agent.sh's).
agent=
for _ in $(seq 1 300); do
  for p in $(pgrep -x tap-agent || true); do
    if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF "$work/agent.toml"; then agent=$p; fi
  done
  [[ -n $agent ]] && break
  sleep 0.1
done
[[ -n ${agent:-} ]] || { cat "$work/heaptrack.out" >&2; echo "heap-agent: the agent did not start" >&2; exit 1; }
echo "tap-agent (pid $agent) under heaptrack for $minutes min"
sleep $((minutes * 60))
kill -TERM "$agent" 2>/dev/null || echo "heap-agent: the agent exited before $minutes min" >&2
wait "$tracker" || true
agent=
data=$(ls "$work"/heap*.zst 2>/dev/null | head -1)
[[ -n $data ]] || { cat "$work/heaptrack.out" >&2; echo "heap-agent: heaptrack wrote nothing" >&2; exit 1; }
heaptrack_print -f "$data" 2>/dev/null | grep -E "^(total runtime|calls to allocation|peak heap|total memory leaked)" || true
heaptrack_print -f "$data" -M "$work/heap.massif" >/dev/null 2>&1
echo "heap peak by minute (KiB):"
grep -E "^(time|mem_heap_B)=" "$work/heap.massif" | paste - - | tr '=\t' '  ' \
  | awk '{m=int($2/60); if (!(m in p) || $4>p[m]) p[m]=$4} END {for (k in p) printf "%d %.0f\n", k+1, p[k]/1024}' \
  | sort -n | awk '{printf "%s%s min %s", (NR>1?", ":""), $1, $2} END {print ""}'
