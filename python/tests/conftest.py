"""Shared fixtures: the real `tap` binary (TAP_BIN, default target/debug/tap) in a private
TAP_HOME, and a clean tapml for in-process tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON_DIR = REPO / "python"
EXAMPLES = REPO / "examples"
#: Every wait in these tests is bounded by this.
BOUND_S = 60.0

# The tests import the checkout's tapml, never an installed one.
sys.path.insert(0, str(PYTHON_DIR))


def tap_bin() -> Path:
    p = Path(os.environ.get("TAP_BIN") or REPO / "target" / "debug" / "tap")
    if not p.is_file():
        pytest.fail(f"no tap binary at {p}: build it (cargo build -p tap-cli) or set TAP_BIN", pytrace=False)
    return p


# Variables of an outer tap run (or a developer's shell) that would leak into the tests.
_TAP_VARS = [v for v in os.environ if v.startswith("TAP_") and v != "TAP_BIN"] + ["RANK", "PYTHONPATH", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "WORLD_SIZE"]


class Tap:
    """`tap --local` in its own TAP_HOME; `run` starts `tap run` and `json` reads listings."""

    def __init__(self, home: Path, workdir: Path) -> None:
        self.home, self.workdir, self.bin = home, workdir, tap_bin()

    def env(self, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _TAP_VARS}
        env.update({"TAP_HOME": str(self.home), "TAP_EXAMPLE_STEP_SECONDS": "0.02", "PYTHONUNBUFFERED": "1"})
        env.update(extra or {})
        return env

    def __call__(self, *args: str, check: bool = True, extra: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        out = subprocess.run(
            [str(self.bin), "--local", *args], env=self.env(extra), cwd=self.workdir, capture_output=True, text=True, timeout=BOUND_S * 3
        )
        if check and out.returncode != 0:
            raise AssertionError(f"tap {' '.join(args)} exited {out.returncode}:\n{out.stderr}")
        return out

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--output", "json").stdout)

    def start(self, *args: str, extra: Optional[Dict[str, str]] = None) -> subprocess.Popen:
        return subprocess.Popen(
            [str(self.bin), "--local", *args], env=self.env(extra), cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def params(self, **values: Any) -> None:
        for k, v in values.items():
            self("params", "set", k, str(v))

    def runs(self) -> List[Dict[str, Any]]:
        return self.json("runs", "list")

    def steps(self, run_id: str, metric: str = "loss") -> List[int]:
        return [p["step"] for p in self.json("runs", "show", run_id)["metrics"] if p["name"] == metric]

    def interrupt_after(self, proc: subprocess.Popen, points: int) -> subprocess.CompletedProcess:
        """SIGUSR1 to `tap run` once its run recorded `points` metric points (bounded)."""
        until = time.monotonic() + BOUND_S * 2
        while time.monotonic() < until and proc.poll() is None:
            runs = self.runs()
            if runs and runs[0]["metric_points"] >= points:
                break
            time.sleep(0.1)
        assert proc.poll() is None, f"the run ended before the notice:\n{proc.communicate()[1]}"
        proc.send_signal(signal.SIGUSR1)
        stdout, stderr = proc.communicate(timeout=BOUND_S * 2)
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.fixture
def tap(tmp_path: Path) -> Tap:
    work = tmp_path / "work"
    work.mkdir()
    return Tap(tmp_path / "home", work)


@pytest.fixture
def tapml_clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """tapml in this process, outside tap, cwd in a temporary directory, state reset."""
    for v in _TAP_VARS:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.chdir(tmp_path)
    import tapml
    from tapml import _core

    _core._metrics.flush()
    _core._metrics.last_step = None
    _core._metrics.announced_end = None
    _core._metrics.refused_names.clear()
    monkeypatch.setattr(_core, "_published", False)
    yield tapml
    _core._metrics.flush()
