"""tapml under the real `tap run` (TAP_BIN, in a private TAP_HOME, local store): no install
step, metrics recorded, checkpoints committed, a notice honoured, a resume restoring."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import BOUND_S, EXAMPLES, PYTHON_DIR, REPO


def script(tmp_path: Path, body: str) -> str:
    p = tmp_path / "script.py"
    p.write_text(textwrap.dedent(body))
    return str(p)


def test_train_py_is_interrupted_and_resumed_with_every_step_exactly_once(tap):
    tap.params(epochs=2, steps_per_epoch=50, checkpoint_every=10)
    first = tap.interrupt_after(tap.start("run", "-e", "spot", "--", sys.executable, str(EXAMPLES / "train.py")), points=15)
    assert first.returncode == 75, first.stderr
    assert "interruption notice: checkpointed at step" in first.stdout
    run = tap.runs()[0]
    assert run["status"] == "interrupted" and run["checkpoint"], run
    done = tap.steps(run["run_id"])
    last = done[-1]
    assert 0 < last < 100, f"stopped mid-training at {last}"
    assert run["interruption"]["verdict"]["verdict"] == "committed", run["interruption"]

    second = tap("run", "-e", "spot", "--resume", "--", sys.executable, str(EXAMPLES / "train.py"))
    assert f"resumed at step {last}" in second.stdout, second.stdout
    runs = tap.runs()
    assert len(runs) == 1, "a resume is a new attempt of the same run, never a second run"
    again = runs[0]
    assert again["run_id"] == run["run_id"] and again["status"] == "succeeded", again
    assert [a["status"] for a in again["attempts"]] == ["interrupted"], again["attempts"]
    assert again["restored_step"] == last and "recomputed_steps" not in again, again
    assert tap.steps(again["run_id"]) == list(range(1, 101)), "one series over both attempts"
    assert again["metric_points"] == 300, "every step exactly once (loss, w, b per step)"


def test_tap_run_provides_its_own_tapml_with_no_install_step(tap, tmp_path):
    s = script(
        tmp_path,
        """
        import tapml, os
        print(tapml.__version__, tapml.__file__)
        print(os.environ["PYTHONPATH"].split(":")[1:])
        """,
    )
    out = tap("run", "-e", "provided", "--", sys.executable, s, extra={"PYTHONPATH": "/somewhere/else"})
    version, path = out.stdout.splitlines()[0].split()
    run_id = tap.runs()[0]["run_id"]
    assert Path(path) == tap.home / "runs" / run_id / "python" / "tapml" / "__init__.py", "the copy tap wrote for this run"
    tap_version = subprocess.run([str(tap.bin), "--version"], capture_output=True, text=True).stdout.split()[-1]
    assert version == tap_version, "the embedded tapml is this tap's version"
    assert out.stdout.splitlines()[1] == "['/somewhere/else']", "the caller's PYTHONPATH is kept after tap's copy"


def test_a_checkpoint_block_that_raises_under_tap_commits_nothing(tap, tmp_path):
    s = script(
        tmp_path,
        """
        import tapml
        tapml.log(1, loss=1.0)
        with tapml.checkpoint(1) as d:
            (d / "model.pt").write_text("half")
            raise SystemExit("out of memory while saving")
        """,
    )
    out = tap("run", "-e", "raise", "--", sys.executable, s, check=False)
    assert out.returncode == 1 and "out of memory while saving" in out.stderr
    run = tap.runs()[0]
    assert run["status"] == "failed" and run["checkpoint"] is None, run
    assert not (tap.home / "runs" / run["run_id"] / "checkpoint" / "model.pt").exists()
    assert tap.steps(run["run_id"]) == [1]


def test_time_left_is_the_deadline_tap_gives_after_a_notice(tap, tmp_path):
    s = script(
        tmp_path,
        """
        import time, tapml
        for step in range(1, 3000):
            tapml.log(step, loss=1.0 / step)
            if tapml.should_stop():
                print("left", tapml.time_left())
                with tapml.checkpoint(step) as d:
                    (d / "s").write_text(str(step))
                break
            time.sleep(0.01)
        """,
    )
    out = tap.interrupt_after(tap.start("run", "-e", "deadline", "--checkpoint-deadline", "30s", "--", sys.executable, s), points=5)
    assert out.returncode == 75, out.stderr
    left = float(out.stdout.split("left ")[1].split()[0])
    assert 20 < left <= 30, f"time_left() {left} is within --checkpoint-deadline 30s"
    assert tap.runs()[0]["interruption"]["verdict"]["verdict"] == "committed"


def test_a_script_that_imports_tapml_runs_unchanged_outside_tap_after_pip_install(tmp_path):
    target = tmp_path / "site"
    # From a copy: setuptools builds in the source tree (build/, *.egg-info).
    source = tmp_path / "source"
    shutil.copytree(PYTHON_DIR, source, ignore=shutil.ignore_patterns("__pycache__", "tests", "build", "*.egg-info"))
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(target), str(source)],
        capture_output=True,
        text=True,
        timeout=BOUND_S * 5,
    )
    assert pip.returncode == 0, pip.stderr
    assert (target / "tapml" / "py.typed").is_file(), "the package says it is typed"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAP_")}
    env.update({"PYTHONPATH": str(target), "TAP_EXAMPLE_STEP_SECONDS": "0"})
    work = tmp_path / "laptop"
    work.mkdir()
    out = subprocess.run(
        [sys.executable, "-c", "import runpy, tapml, sys; print(tapml.__file__); runpy.run_path(sys.argv[1], run_name='__main__')", str(EXAMPLES / "train.py")],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=BOUND_S,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith(str(target)), "the installed copy was used"
    assert "done: w=" in out.stdout and "tapml: step 120" in out.stderr
    assert (work / "checkpoints" / "state.json").is_file()
