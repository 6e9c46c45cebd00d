#!/usr/bin/env bash
# Runs the node's boot for real: the user_data infra/tap-stack.tf renders, as root in a
# sandbox, with the real tap-agent and tap (tools/boot-test/boot_test.py) and moto for what
# tap-agent bootstrap asks of AWS. Needs root,
# unshare and overlayfs; where they are missing it says why and stops. Builds the two
# binaries and the stand-in Terraform provider first. Ends with `boot: N passed, M failed`.
# Extra arguments go to boot_test.py (-k NAME runs matching scenarios, --keep keeps them).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
# The stand-in provider and moto (the boot's AWS calls go to moto on loopback).
if [[ -z "${TF_CLI_CONFIG_FILE:-}" || ! -e "${TF_CLI_CONFIG_FILE}" || -z "${TAP_MOTO_SERVER:-}" ]]; then
  tools_env=$(scripts/tools.sh)
  set -a; eval "$tools_env"; set +a
fi
(cd infra && terraform init -backend=false -input=false -no-color >/dev/null)
# scripts/test.sh has just built both binaries with `cargo test` (TAP_BOOT_BINARIES_BUILT=1):
# a plain `cargo build` would resolve features without the dev-dependencies and rebuild them.
if [[ "${TAP_BOOT_BINARIES_BUILT:-}" != 1 || ! -x target/debug/tap-agent || ! -x target/debug/tap ]]; then
  cargo build --locked --bin tap-agent --bin tap >&2
fi
exec python3 tools/boot-test/boot_test.py --tap-agent target/debug/tap-agent --tap target/debug/tap "$@"
