#!/usr/bin/env bash
# Transfer benchmark (README "Transfers" figures): tap vs awscli, boto3 and s3transfer's CRT
# manager against s3s-fs on loopback. Installs s3s-fs 0.14.1 (crates.io) and the Python
# clients (PyPI) into .tools/. TAP_BENCH_SIZES_MIB (default 256,1024), TAP_BENCH_FILES (2000x32:
# many small files as one artifact), TAP_BENCH_RUNS (3),
# TAP_BENCH_TOOLS, TAP_BENCH_PART_MIB (16), TAP_BENCH_CONCURRENCY (8) tune it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
tools="${TAP_TOOLS:-$repo/.tools}"
if [[ ! -x "$tools/s3s-fs/bin/s3s-fs" ]]; then
  cargo install s3s-fs --version 0.14.1 --features binary --locked --root "$tools/s3s-fs"
fi
if [[ ! -x "$tools/pybench/bin/aws" ]]; then
  python3 -m venv "$tools/pybench"
  "$tools/pybench/bin/pip" install --quiet --disable-pip-version-check awscli==1.46.3 boto3==1.44.8 awscrt==0.38.1
fi
export TAP_S3S_FS="$tools/s3s-fs/bin/s3s-fs" TAP_PYBENCH="$tools/pybench"
cd "$repo"
exec cargo bench -p tap-cli --bench transfer
