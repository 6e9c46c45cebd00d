#!/usr/bin/env bash
# Supervisor benchmark (README "tap run under load"): `tap run` committing big checkpoints
# while its command prints a line per millisecond, and an interruption notice during the
# last commit; this tap against the previous version, measured in the same run, on the local
# store and on a stack (S3 on s3s-fs, the rest on moto), all on loopback.
# Builds both in release (the previous one from git: TAP_BENCH_PREV_REV, default 96ff95f, the
# last commit before this work; or TAP_BENCH_PREV_BIN), installs s3s-fs 0.14.1 and moto
# (scripts/tools.sh) into .tools/, then runs tools/bench-supervisor/bench.py.
# TAP_BENCH_SIZES_MIB (256,2048; add 8192 for the 8 GiB opt-in, ~50 GB of free disk),
# TAP_BENCH_NOTICES (5), TAP_BENCH_STORES (local,s3), TAP_BENCH_JSON (a file for the figures).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
tools="${TAP_TOOLS:-$repo/.tools}"
cd "$repo"
if [[ ! -x "$tools/s3s-fs/bin/s3s-fs" ]]; then
  cargo install s3s-fs --version 0.14.1 --features binary --locked --root "$tools/s3s-fs"
fi
set -a
# shellcheck disable=SC1090
source <(scripts/tools.sh)
set +a
cargo build --release --locked -p tap-cli --no-default-features
prev="${TAP_BENCH_PREV_BIN:-}"
if [[ -z "$prev" ]]; then
  rev="${TAP_BENCH_PREV_REV:-96ff95f}"
  src="$tools/bench-prev-$rev"
  [[ -d "$src" ]] || git worktree add --detach "$src" "$rev"
  (cd "$src" && CARGO_TARGET_DIR="$repo/target/bench-prev" cargo build --release --locked -p tap-cli --no-default-features)
  prev="$repo/target/bench-prev/release/tap"
fi
exec "$(dirname "$TAP_MOTO_SERVER")/python" tools/bench-supervisor/bench.py \
  --this "$repo/target/release/tap" --previous "$prev" \
  --sizes-mib "${TAP_BENCH_SIZES_MIB:-256,2048}" --notices "${TAP_BENCH_NOTICES:-5}" \
  --stores "${TAP_BENCH_STORES:-local,s3}" --moto-server "$TAP_MOTO_SERVER" --s3s-fs "$tools/s3s-fs/bin/s3s-fs" \
  ${TAP_BENCH_JSON:+--json "$TAP_BENCH_JSON"}
