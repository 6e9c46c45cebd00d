#!/usr/bin/env bash
# Sharded-checkpoint benchmark (README "Sharded checkpoints"): a job of 1, 2 and 4 ranks on
# this machine (one `tap run --group` each), every rank writing a shard of the same size after
# the interruption notice, against the same state gathered on rank 0, measured in the same run,
# on the local store and on S3 (moto), all on loopback: notice -> the job's commit, and the
# commit's own latency after the last shard landed. Builds tap in release, installs moto
# (scripts/tools.sh), then runs tools/bench-shards/bench.py.
# TAP_BENCH_RANKS (1,2,4), TAP_BENCH_SHARD_MIB (128), TAP_BENCH_STORES (local,s3),
# TAP_BENCH_JSON (a file for the figures).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
set -a
# shellcheck disable=SC1090
source <(scripts/tools.sh)
set +a
cargo build --release --locked -p tap-cli --no-default-features
exec "$(dirname "$TAP_MOTO_SERVER")/python" tools/bench-shards/bench.py \
  --tap "$repo/target/release/tap" --moto-server "$TAP_MOTO_SERVER" \
  --ranks "${TAP_BENCH_RANKS:-1,2,4}" --shard-mib "${TAP_BENCH_SHARD_MIB:-128}" \
  --stores "${TAP_BENCH_STORES:-local,s3}" ${TAP_BENCH_JSON:+--json "$TAP_BENCH_JSON"}
