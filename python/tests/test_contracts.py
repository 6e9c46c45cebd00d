"""tapml's side of the contracts it shares with tap, each read from its one definition in
spec/ (the Rust side reads the same files: tap_core::command_env, tap_core::names)."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SPEC = json.loads((REPO / "spec" / "environment.json").read_text(encoding="utf-8"))
TAPML = REPO / "python" / "tapml"


def tapml_reads() -> set:
    """Every TAP_* variable named anywhere in tapml's sources."""
    found = set()
    for source in TAPML.rglob("*.py"):
        found.update(re.findall(r"\bTAP_[A-Z0-9_]+\b", source.read_text(encoding="utf-8")))
    return found


def test_every_variable_tapml_reads_is_one_tap_run_sets() -> None:
    command = {v["name"] for v in SPEC["command"]}
    read = tapml_reads()
    assert read, "tapml reads no TAP_ variable: the scan is broken"
    assert read <= command, f"tapml reads variables tap run does not set: {sorted(read - command)}"


def test_every_variable_is_documented_on_the_tapml_page() -> None:
    page = (REPO / "docs" / "tapml.md").read_text(encoding="utf-8")
    for v in SPEC["command"] + SPEC["node"]:
        assert f"`{v['name']}`" in page, f"docs/tapml.md does not document {v['name']}"
    assert f"`{SPEC['hparam_prefix']}<NAME>`" in page


def test_the_variables_tap_run_sets_are_what_the_command_sees(tap) -> None:
    """The real binary, not the spec's word for it: a command under tap run sees every variable
    the spec says tap run always sets (the restore-only ones are covered by the resume tests)."""
    always = sorted(v["name"] for v in SPEC["command"] if v["always"])
    script = "import json, os; print(json.dumps({k: v for k, v in os.environ.items() if k.startswith('TAP_')}))"
    done = tap("run", "--param", "lr=0.1", "--", "python3", "-c", script)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    missing = [n for n in always if n not in seen]
    assert not missing, f"tap run did not set {missing}"
    assert seen.get(SPEC["hparam_prefix"] + "LR") == "0.1"
    unknown = sorted(
        k for k in seen
        if k not in {v["name"] for v in SPEC["command"]} and not k.startswith(SPEC["hparam_prefix"])
        and k not in ("TAP_HOME", "TAP_BIN", "TAP_EXAMPLE_STEP_SECONDS")
    )
    assert not unknown, f"tap run sets variables the spec does not define: {unknown}"
