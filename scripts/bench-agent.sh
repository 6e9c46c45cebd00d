#!/usr/bin/env bash
# tap-agent benchmark (README "tap-agent" figures): installs moto, builds in release, runs
# benches/agent.rs. TAP_BENCH_SECONDS sets the footprint measurement (default 600: RSS
# grew for the first ~7 minutes of a run, so a minute is not the steady state).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
eval "$(scripts/tools.sh)"
export TAP_MOTO_SERVER
exec cargo bench -p tap-agent --bench agent
