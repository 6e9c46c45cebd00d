#!/usr/bin/env bash
# Runs the node's boot for real: the user_data infra/tap-stack.tf renders, as root in a
# sandbox, with the real tap-agent and tap (tools/boot-test/boot_test.py). Needs root,
# unshare and overlayfs; where they are missing it says why and stops. Builds the two
# binaries and the stand-in Terraform provider first. Ends with `boot: N passed, M failed`.
# Extra arguments go to boot_test.py (-k NAME runs matching scenarios, --keep keeps them).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
if [[ -z "${TF_CLI_CONFIG_FILE:-}" || ! -e "${TF_CLI_CONFIG_FILE}" ]]; then
  TF_CLI_CONFIG_FILE=$(tools/tf-standin/build.sh)
  export TF_CLI_CONFIG_FILE
fi
(cd infra && terraform init -backend=false -input=false -no-color >/dev/null)
# With the features scripts/test.sh tests with (TAP_BOOT_FEATURES), cargo reuses its binaries.
if [[ -n "${TAP_BOOT_FEATURES:-}" ]]; then
  cargo build --locked --workspace --bins --features "$TAP_BOOT_FEATURES" >&2
else
  cargo build --locked --bin tap-agent --bin tap >&2
fi
exec python3 tools/boot-test/boot_test.py --tap-agent target/debug/tap-agent --tap target/debug/tap "$@"
