#!/usr/bin/env bash
# `tap goodput simulate` benchmark (README "Goodput"): replays the measured g4dn trace
# (tools/bench-simulate/g4dn-trace.csv, Bamboo's, MIT: LICENSE.bamboo beside it), a synthetic 32-node 11-hour trace and a synthetic 1,000-node 7-day trace,
# each with its sweep of checkpoint intervals, and prints the wall time against the issue's
# budgets (1 s, 1 s, 30 s). Builds tap in release. TAP_BENCH_TRACE (the g4dn trace),
# TAP_BENCH_JSON (a file for the figures).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
trace="${TAP_BENCH_TRACE:-$repo/tools/bench-simulate/g4dn-trace.csv}"
[[ -f "$trace" ]] || { echo "bench-simulate: no trace at $trace (set TAP_BENCH_TRACE)" >&2; exit 2; }
cargo build --release --locked -p tap-cli --no-default-features
exec python3 tools/bench-simulate/bench.py --tap "$repo/target/release/tap" --trace "$trace" \
  ${TAP_BENCH_JSON:+--json "$TAP_BENCH_JSON"}
