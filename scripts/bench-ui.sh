#!/usr/bin/env bash
# `tap ui` benchmark (README "tap ui"): builds crates/tap-cli/benches/ui.rs in release and runs
# it — the runs page of 10,000 runs x 50 hyperparameters x 50 metrics, a run page of 10 metrics
# x 1,000,000 points, a compare of 100 runs x 3 metrics x 100,000 points, served by the real
# router on loopback, cold and warm, against their budgets (200 / 300 / 500 ms) and the naive
# read of every point. Then the browser test with the release `tap`: Chromium's time from
# navigation to every chart of the 10 x 1 M run drawn (budget 1.5 s). The store is built once
# under TAP_BENCH_DIR (default target/bench-ui; ~5 GB, a few minutes).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export TAP_BENCH_DIR="${TAP_BENCH_DIR:-$repo/target/bench-ui}"
cargo bench --locked -p tap-cli --bench ui
cargo build --release --locked -p tap-cli --bin tap
if [[ -z "${BROWSER_PYTEST:-}" ]]; then
  set -a; source <(scripts/tools.sh); set +a
fi
TAP_BIN="$repo/target/release/tap" TAP_BROWSER_OUT="$repo/target/bench-ui/browser" \
  "$BROWSER_PYTEST" -q -s -p no:cacheprovider "$repo/crates/tap-cli/tests/browser" -k million
