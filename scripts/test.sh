#!/usr/bin/env bash
# Runs every test of tap: Rust (format, lints, unit, property and binary tests), tapml's
# pytest suite (python/tests), tap ui in headless Chromium (crates/tap-cli/tests/browser) and the stack
# (terraform fmt/validate/test against the stand-in provider, the node's boot executed in a
# sandbox, checkov, trivy). Installs what it needs first (scripts/tools.sh). Every stage
# runs; the last line sums them up.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
passed=0 failed=0 failures=()

stage() { # name, command...
  local name=$1; shift
  echo "==> $name"
  if "$@" 2>&1 | tee "$log/$name.out"; then
    echo "<== $name: ok"
  else
    echo "<== $name: FAILED"
    failures+=("$name")
  fi
}
count() { # adds "N passed; M failed" (cargo) or "N passed, M failed" (terraform) lines of a stage
  # Only the pair counts: a lone "N failed" can be anything a test printed (a run id ending in
  # digits before " failed" once counted as 6106 failures).
  local pairs p f
  pairs=$(grep -Eo '[0-9]+ passed[;,] [0-9]+ failed' "$log/$1.out" || true)
  p=$(awk '{s += $1} END {print s + 0}' <<<"$pairs")
  f=$(awk '{s += $3} END {print s + 0}' <<<"$pairs")
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
}
count_pytest() { # adds pytest's summary line ("3 failed, 40 passed, 3 skipped in 9.1s")
  local summary p f
  summary=$(grep -E '^[0-9]+ [a-z]+.* in [0-9.]+s' "$log/$1.out" | tail -n1 || true)
  p=$(grep -Eo '[0-9]+ passed' <<<"$summary" | awk '{print $1}')
  f=$(grep -Eo '[0-9]+ (failed|errors?)' <<<"$summary" | awk '{s += $1} END {print s + 0}')
  # No summary at all (pytest could not start) counts as one failure.
  if [[ -z "$summary" ]]; then f=1; fi
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
}
check() { # a stage that is one check
  if [[ " ${failures[*]} " == *" $1 "* ]]; then failed=$((failed + 1)); else passed=$((passed + 1)); fi
}

stage tools-install bash -c "scripts/tools.sh > '$log/tools.env'"
set -a; source "$log/tools.env"; set +a

stage cargo-fmt cargo fmt --all --check
check cargo-fmt
features=tap-agent/aws-integration,tap-cli/aws-integration,tap-fleet/aws-integration,tap-store/aws-integration
stage cargo-clippy cargo clippy --workspace --all-targets --locked --features "$features" -- -D warnings
check cargo-clippy
stage cargo-test cargo test --workspace --locked --features "$features"
count cargo-test

# tapml (python/tapml) against the tap binary the cargo stage built; pytest's exit status
# fails the stage (1: tests failed, 2-4: usage or internal errors, 5: no tests collected).
stage pytest env TAP_BIN="$repo/target/debug/tap" "$PYTEST" -q -rs -p no:cacheprovider "$repo/python/tests"
count_pytest pytest

# tap ui in headless Chromium (crates/tap-cli/tests/browser): screenshots in target/browser-test/.
stage browser env TAP_BIN="$repo/target/debug/tap" CHROMIUM="$CHROMIUM" TAP_BROWSER_OUT="$repo/target/browser-test" \
  "$BROWSER_PYTEST" -q -rs -s -p no:cacheprovider "$repo/crates/tap-cli/tests/browser"
count_pytest browser

stage terraform-fmt terraform fmt -check -recursive -diff infra
check terraform-fmt
stage terraform-validate bash -c "cd infra && terraform init -backend=false -input=false -no-color >/dev/null && terraform validate -no-color"
check terraform-validate
stage terraform-test bash -c "cd infra && terraform test -no-color"
count terraform-test

# The node's boot, executed as root in a sandbox with the real binaries (scripts/test-boot.sh).
stage boot env TAP_BOOT_BINARIES_BUILT=1 scripts/test-boot.sh
count boot

stage checkov "$CHECKOV" -d infra --framework terraform --skip-download --compact --quiet -o cli
check checkov
stage trivy "$TRIVY" config --skip-check-update --exit-code 1 infra
check trivy

if [[ " ${failures[*]} " == *" tools-install "* ]]; then failed=$((failed + 1)); fi
echo
if ((${#failures[@]})); then echo "failed stages: ${failures[*]}"; fi
echo "tests: $passed passed, $failed failed"
((${#failures[@]} == 0))
