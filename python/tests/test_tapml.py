"""tapml on its own: the API's behaviour and its refusals, in this process (outside tap, or
with the variables tap sets pointed at temporary files) and, for signals, in a child."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import pytest

from conftest import BOUND_S, PYTHON_DIR, REPO


def lines(path: Path) -> list:
    """The metrics file's lines, each metric line's `_timestamp` (when it was logged) checked
    and taken out."""
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        d = json.loads(line)
        t = d.pop("_timestamp", None)
        if "checkpoint" not in d:
            assert isinstance(t, float) and abs(t - time.time()) < 3600, line
        out.append(d)
    return out


@pytest.fixture
def under_tap(tapml_clean, monkeypatch, tmp_path):
    """The variables `tap run` sets, pointed into tmp_path."""
    ckpt = tmp_path / "run" / "checkpoint"
    ckpt.mkdir(parents=True)
    env = {
        "TAP_RUN_ID": "r-1",
        "TAP_CHECKPOINT_DIR": str(ckpt),
        "TAP_METRICS_FILE": str(tmp_path / "run" / "metrics.jsonl"),
        "TAP_HPARAMS_FILE": str(tmp_path / "run" / "hparams.json"),
        "TAP_NOTICE_INFO": str(tmp_path / "run" / "notice.json"),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return tapml_clean, tmp_path / "run"


# ---- log


def test_log_records_numbers_at_steps_and_counts_on(under_tap):
    tapml, run = under_tap
    tapml.log(5, loss=0.5, tokens=1024)
    tapml.log(loss=0.25)  # step 6
    tapml.log(step=10, acc=0.9)
    tapml.flush()
    assert lines(run / "metrics.jsonl") == [
        {"step": 5, "loss": 0.5, "tokens": 1024},
        {"step": 6, "loss": 0.25},
        {"step": 10, "acc": 0.9},
    ]


def test_log_with_a_string_step_is_a_type_error_naming_the_fix(tapml_clean):
    with pytest.raises(TypeError, match=r"step must be an int, got str 'loss'.*tapml.log\(step=10, loss=0.4\)"):
        tapml_clean.log("loss")
    with pytest.raises(TypeError, match="got bool"):
        tapml_clean.log(True, loss=1.0)
    with pytest.raises(ValueError, match="step must be >= 0"):
        tapml_clean.log(-1, loss=1.0)


@pytest.mark.parametrize(
    "value, why",
    [("0.5", "is str"), ([1, 2], "is list"), (None, "is NoneType"), (True, "is bool"), (float("nan"), "is nan, not finite"), (math.inf, "is inf")],
)
def test_a_bad_metric_value_is_skipped_with_a_warning_naming_it(under_tap, value, why):
    tapml, run = under_tap
    with pytest.warns(tapml.TapmlWarning, match=f"metric 'bad' {why}"):
        tapml.log(1, bad=value, loss=0.5)
    tapml.flush()
    assert lines(run / "metrics.jsonl") == [{"step": 1, "loss": 0.5}], "the good metric is kept, the bad one skipped"


@pytest.mark.parametrize("name", ["a b", "x" * 257, "checkpoint", "ünïcode", "..", "train//loss"])
def test_a_metric_name_tap_cannot_store_is_skipped_with_a_warning(under_tap, name):
    tapml, run = under_tap
    with pytest.warns(tapml.TapmlWarning, match="is refused"):
        tapml.log(1, **{name: 1.0})
    tapml.flush()
    assert lines(run / "metrics.jsonl") == []


def test_the_shared_name_vectors_hold(tapml_clean):
    """spec/names.json is read by the Rust tests too (tap_core::names): one rule, two sides."""
    vectors = json.loads((REPO / "spec" / "names.json").read_text())
    assert len(vectors["accepted"]) >= 10 and len(vectors["refused"]) >= 10
    for name in vectors["accepted"]:
        assert tapml_clean.name_problem(name) is None, name
    for r in vectors["refused"]:
        problem = tapml_clean.name_problem(r["name"])
        assert problem is not None and r["why"] in problem, (r, problem)


def test_train_slash_loss_was_refused_and_the_run_had_no_metrics(under_tap):
    tapml, run = under_tap
    tapml.log(step=1, **{"train/loss": 0.5, "eval/acc@1": 0.9, "lr-AdamW": 1e-3, "val_loss/dataloader_idx_0": 0.7})
    tapml.flush()
    assert lines(run / "metrics.jsonl") == [
        {"step": 1, "train/loss": 0.5, "eval/acc@1": 0.9, "lr-AdamW": 1e-3, "val_loss/dataloader_idx_0": 0.7}
    ]


def test_one_refused_name_is_skipped_alone_and_said_once(under_tap):
    tapml, run = under_tap
    with pytest.warns(tapml.TapmlWarning) as said:
        for step in range(3):
            tapml.log(step, loss=0.5, **{"accé": 1.0, "..": 2.0})
    tapml.flush()
    assert lines(run / "metrics.jsonl") == [{"step": s, "loss": 0.5} for s in range(3)]
    refused = [str(w.message) for w in said if "is refused" in str(w.message)]
    assert len(refused) == 2, refused


def test_numpy_like_scalars_are_numbers(under_tap):
    class Scalar:  # what numpy scalars and one-element tensors look like to tapml
        def item(self):
            return 0.125

    class Tensor:
        def item(self):
            raise ValueError("only one element tensors can be converted")

    tapml, run = under_tap
    with pytest.warns(tapml.TapmlWarning, match="metric 'many' is not a single number"):
        tapml.log(3, loss=Scalar(), many=Tensor())
    tapml.flush()
    assert lines(run / "metrics.jsonl") == [{"step": 3, "loss": 0.125}]


def test_metrics_are_written_within_a_second_without_flush(under_tap):
    tapml, run = under_tap
    tapml.log(1, loss=1.0)
    until = time.monotonic() + BOUND_S
    while not lines(run / "metrics.jsonl") and time.monotonic() < until:
        time.sleep(0.05)
    assert lines(run / "metrics.jsonl") == [{"step": 1, "loss": 1.0}], "the flusher thread wrote it"


def test_a_fast_loop_loses_no_metric_lines(under_tap):
    # Regression: lines logged faster than a second's flush overflowed the buffer's cap and
    # were dropped, with a warning that blamed the file.
    tapml, run = under_tap
    n = 150_000
    for step in range(n):
        tapml.log(step, loss=0.5)
    tapml.flush()
    assert sum(1 for _ in (run / "metrics.jsonl").open()) == n


def test_metrics_wait_while_the_file_cannot_be_written_and_drop_only_past_the_cap(under_tap, monkeypatch):
    tapml, run = under_tap
    from tapml import _core

    monkeypatch.setattr(_core, "MAX_BUFFERED_LINES", 100)
    target = run / "later" / "metrics.jsonl"
    monkeypatch.setenv("TAP_METRICS_FILE", str(target))
    tapml.log(0, loss=1.0)
    with pytest.warns(tapml.TapmlWarning, match="cannot write metrics to .*later/metrics.jsonl"):
        tapml.flush()
    for step in range(1, 150):
        tapml.log(step, loss=1.0)
    target.parent.mkdir()
    with pytest.warns(tapml.TapmlWarning, match=r"\d+ metric lines were dropped while"):
        tapml.flush()
    steps = [r["step"] for r in lines(target)]
    assert 0 < len(steps) <= 100 and steps == list(range(150 - len(steps), 150)), "the newest kept, in order"


def test_only_rank_0_records(under_tap, monkeypatch):
    tapml, run = under_tap
    monkeypatch.setenv("RANK", "1")
    tapml.log(1, loss=1.0)
    tapml.flush()
    assert lines(run / "metrics.jsonl") == []


def test_metrics_at_exit_are_flushed_and_a_forked_child_does_not_repeat_them(tmp_path):
    metrics = tmp_path / "m.jsonl"
    script = textwrap.dedent(
        """
        import os, tapml
        tapml.log(1, loss=1.0)          # buffered at the fork
        pid = os.fork()
        if pid == 0:
            tapml.log(2, child=1.0)
            raise SystemExit(0)         # atexit flushes the child's own line only
        os.waitpid(pid, 0)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(PYTHON_DIR), "TAP_RUN_ID": "r", "TAP_METRICS_FILE": str(metrics)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=BOUND_S)
    assert out.returncode == 0, out.stderr
    assert sorted(lines(metrics), key=lambda r: r["step"]) == [{"step": 1, "loss": 1.0}, {"step": 2, "child": 1.0}]


def test_outside_tap_metrics_go_to_stderr(tmp_path):
    script = "import tapml; tapml.log(7, loss=0.5)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAP_")}
    env["PYTHONPATH"] = str(PYTHON_DIR)
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=BOUND_S)
    assert out.returncode == 0 and "tapml: step 7  loss=0.5" in out.stderr, out.stderr


# ---- hparams


def test_hparams_are_numbers_where_they_are_numbers(under_tap):
    tapml, run = under_tap
    (run / "hparams.json").write_text(
        json.dumps({"lr": "0.05", "epochs": "3", "tiny": "1e-4", "neg": "-2", "name": "resnet", "inf": "inf", "sep": "1_000", "pad": " 3"})
    )
    hp = tapml.hparams({"epochs": 1, "warmup": 10})
    assert hp == {"lr": 0.05, "epochs": 3, "tiny": 1e-4, "neg": -2, "name": "resnet", "inf": "inf", "sep": "1_000", "pad": " 3", "warmup": 10}
    assert type(hp["epochs"]) is int and type(hp["lr"]) is float


def test_hparams_outside_tap_are_the_defaults(tapml_clean):
    assert tapml_clean.hparams({"lr": 0.1}) == {"lr": 0.1}
    assert tapml_clean.hparams() == {}


@pytest.mark.parametrize("body, why", [("{not json", "cannot read .*hparams.json: Expecting"), ("[1, 2]", "hparams.json is not a JSON object")])
def test_an_unreadable_hparams_file_is_one_clear_error(under_tap, body, why):
    tapml, run = under_tap
    (run / "hparams.json").write_text(body)
    with pytest.raises(tapml.TapmlError, match=f"tapml.hparams: .*{why}"):
        tapml.hparams()


# ---- checkpoint


def test_a_checkpoint_replaces_the_directory_and_tells_tap_after_the_metrics(under_tap):
    tapml, run = under_tap
    ckpt = run / "checkpoint"
    (ckpt / "restored-old.bin").write_text("old")
    tapml.log(10, loss=0.5)
    with tapml.checkpoint(10) as d:
        assert d.is_dir() and not any(d.iterdir()), "a fresh, empty staging directory"
        assert ckpt not in d.parents, "staged outside the directory tap uploads"
        (d / "model.pt").write_text("weights-10")
        (d / "sub").mkdir()
        (d / "sub" / "opt.pt").write_text("opt-10")
    assert sorted(str(p.relative_to(ckpt)) for p in ckpt.rglob("*")) == ["model.pt", "sub", "sub/opt.pt"]
    assert lines(run / "metrics.jsonl") == [{"step": 10, "loss": 0.5}, {"checkpoint": True, "step": 10}]
    assert [p.name for p in (run / ".checkpoint.tapml").iterdir()] == [], "no staging or old copy left"


def test_a_checkpoint_waits_until_tap_took_the_previous_one(under_tap, monkeypatch):
    tapml, run = under_tap
    ack = run / "checkpoint-ack"
    monkeypatch.setenv("TAP_CHECKPOINT_ACK", str(ack))
    with tapml.checkpoint(1) as d:  # nothing announced before it: no wait
        (d / "w").write_text("1")
    end = (run / "metrics.jsonl").stat().st_size
    second = threading.Thread(target=lambda: _write(tapml, 2))
    second.start()
    second.join(0.3)
    assert second.is_alive() and (run / "checkpoint" / "w").read_text() == "1", "waits while tap has not taken step 1"
    ack.write_text(str(end))
    second.join(BOUND_S)
    assert not second.is_alive() and (run / "checkpoint" / "w").read_text() == "2"


def _write(tapml, step):
    with tapml.checkpoint(step) as d:
        (d / "w").write_text(str(step))


def test_the_swap_works_where_directories_cannot_be_exchanged(under_tap, monkeypatch):
    tapml, run = under_tap
    from tapml import _core

    monkeypatch.setattr(_core, "_exchange", None)
    for step in (1, 2):
        with tapml.checkpoint(step) as d:
            (d / f"only-{step}.bin").write_text(str(step))
    assert [p.name for p in (run / "checkpoint").iterdir()] == ["only-2.bin"]


def test_a_swap_that_fails_halfway_puts_the_previous_checkpoint_back(under_tap, monkeypatch):
    tapml, run = under_tap
    from tapml import _core

    monkeypatch.setattr(_core, "_exchange", None)
    with tapml.checkpoint(1) as d:
        for name in ("a", "b"):
            (d / name).write_text(f"{name}1")
    real = Path.rename

    def failing(self, target):
        if self.name == "b" and "stage-2" in str(self):
            raise OSError(28, "No space left on device")
        return real(self, target)

    monkeypatch.setattr(Path, "rename", failing)
    with pytest.raises(OSError, match="No space left"):
        with tapml.checkpoint(2) as d:
            for name in ("a", "b"):
                (d / name).write_text(f"{name}2")
    monkeypatch.setattr(Path, "rename", real)
    ckpt = run / "checkpoint"
    assert {p.name: p.read_text() for p in ckpt.iterdir()} == {"a": "a1", "b": "b1"}, "the previous checkpoint, whole"
    assert [r["step"] for r in lines(run / "metrics.jsonl") if r.get("checkpoint")] == [1], "step 2 never announced"


def test_a_checkpoint_block_that_raises_publishes_nothing(under_tap):
    tapml, run = under_tap
    ckpt = run / "checkpoint"
    with tapml.checkpoint(1) as d:
        (d / "model.pt").write_text("good")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with tapml.checkpoint(2) as d:
            (d / "model.pt").write_text("half")
            raise RuntimeError("disk on fire")
    assert (ckpt / "model.pt").read_text() == "good", "the previous checkpoint is untouched"
    assert [r for r in lines(run / "metrics.jsonl") if r.get("checkpoint")] == [{"checkpoint": True, "step": 1}]
    assert not any((run / ".checkpoint.tapml").iterdir()), "the staging directory is removed"


def test_a_second_checkpoint_while_one_is_open_is_refused(under_tap):
    tapml, run = under_tap
    with tapml.checkpoint(1) as d:
        (d / "a").write_text("a")
        with pytest.raises(RuntimeError, match=r"checkpoint\(1\) is still open"):
            with tapml.checkpoint(2):
                pass
    assert (run / "checkpoint" / "a").read_text() == "a", "the open one still publishes"
    with tapml.checkpoint(3) as d:  # and the next works
        (d / "b").write_text("b")


def test_a_checkpoint_was_refused_whole_for_one_link_or_fifo(under_tap):
    """A link leaving the checkpoint and a FIFO are warned about once each and the rest is
    published (tap leaves them out and records them in the manifest)."""
    tapml, run = under_tap
    from tapml import _core

    _core._warned_entries.clear()
    with pytest.warns(tapml.TapmlWarning) as said:
        for step in (1, 2):
            with tapml.checkpoint(step) as d:
                (d / "sub").mkdir()
                (d / "model.pt").write_text(f"w{step}")
                (d / "sub" / "escape").symlink_to("/etc/passwd")
                (d / "inside").symlink_to("model.pt")
                os.mkfifo(d / "pipe")
    messages = [str(w.message) for w in said]
    assert sum("sub/escape is a symbolic link" in m for m in messages) == 1, messages
    assert sum("pipe is not a regular file" in m for m in messages) == 1, messages
    assert not any(m.startswith("tapml.checkpoint: inside ") for m in messages), "a link to a file inside is stored as that file"
    assert (run / "checkpoint" / "model.pt").read_text() == "w2"
    assert [line.get("step") for line in lines(run / "metrics.jsonl") if line.get("checkpoint")] == [1, 2]


def test_an_empty_checkpoint_is_not_published(under_tap):
    tapml, run = under_tap
    with pytest.warns(tapml.TapmlWarning, match="wrote nothing; nothing published"):
        with tapml.checkpoint(4):
            pass
    assert lines(run / "metrics.jsonl") == []


def test_files_tap_skips_get_a_warning(under_tap):
    tapml, _ = under_tap
    with pytest.warns(tapml.TapmlWarning, match="x.tmp is named as work in progress") as said:
        with tapml.checkpoint(1) as d:
            (d / "x.tmp").write_text("")
            (d / ".metadata").write_text("DCP's metadata: a hidden file tap stores")
            (d / "model.pt").write_text("w")
    assert [str(w.message) for w in said if ".metadata" in str(w.message)] == []


def test_a_bad_step_is_refused_before_anything_is_staged(under_tap):
    tapml, run = under_tap
    with pytest.raises(TypeError, match="tapml.checkpoint: step must be an int"):
        with tapml.checkpoint("10"):
            pass
    assert not (run / ".checkpoint.tapml").exists() or not any((run / ".checkpoint.tapml").iterdir())


def test_other_ranks_publish_nothing(under_tap, monkeypatch):
    tapml, run = under_tap
    monkeypatch.setenv("RANK", "3")
    with tapml.checkpoint(1) as d:
        (d / "model.pt").write_text("rank 3")
    assert not any((run / "checkpoint").iterdir()) and lines(run / "metrics.jsonl") == []


def test_every_rank_of_a_sharded_job_publishes_its_shard(under_tap, monkeypatch):
    """In a sharded job (TAP_WORLD_SIZE > 1, set by tap run --group) rank 3 publishes its own
    shard, an empty one too (the step commits only once every rank stored its shard), and a
    node's other processes (LOCAL_RANK > 0) leave publishing to its first."""
    tapml, run = under_tap
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("TAP_WORLD_SIZE", "4")
    assert tapml.sharded_job() and tapml.publishes_checkpoints()
    with tapml.checkpoint(10) as d:
        (d / "__3_0.distcp").write_text("rank 3's part")
    assert (run / "checkpoint" / "__3_0.distcp").read_text() == "rank 3's part"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with tapml.checkpoint(20):
            pass
    assert not any((run / "checkpoint").iterdir()), "the empty shard replaced the previous one"
    assert [l.get("step") for l in lines(run / "metrics.jsonl") if l.get("checkpoint")] == [10, 20]
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert not tapml.publishes_checkpoints()
    monkeypatch.setenv("TAP_WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert not tapml.sharded_job() and not tapml.publishes_checkpoints(), "a world of one: rank 0 alone"


def test_several_processes_of_a_node_need_torch_distributed_to_share_a_shard(under_tap, monkeypatch):
    tapml, run = under_tap
    monkeypatch.setenv("TAP_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    with pytest.raises(tapml.TapmlError, match="LOCAL_WORLD_SIZE"):
        with tapml.checkpoint(1) as d:
            (d / "part").write_text("x")
    assert not any((run / "checkpoint").iterdir()), "nothing published"


def test_outside_tap_checkpoints_go_to_dot_checkpoints(tapml_clean, tmp_path):
    with tapml_clean.checkpoint(5) as d:
        (d / "state.json").write_text("{}")
    assert (tmp_path / "checkpoints" / "state.json").read_text() == "{}"
    assert tapml_clean.restored() is None and tapml_clean.restored_step() is None


def test_restored_names_the_directory_and_step_until_a_new_checkpoint_replaces_it(under_tap, monkeypatch):
    tapml, run = under_tap
    assert tapml.restored() is None and tapml.restored_step() is None, "nothing restored"
    monkeypatch.setenv("TAP_RESTORED_CHECKPOINT", "r-0-0003")
    monkeypatch.setenv("TAP_RESTORED_STEP", "120")
    assert tapml.restored() == run / "checkpoint" and tapml.restored_step() == 120
    with tapml.checkpoint(121) as d:
        (d / "model.pt").write_text("new")
    assert tapml.restored() is None, "the directory now holds this run's checkpoint, not the restored one"


# ---- notices (each in a child: a signal handler is per process)


def child(script: str, tmp_path: Path, **env: str) -> subprocess.Popen:
    full = {**{k: v for k, v in os.environ.items() if not k.startswith("TAP_")}, "PYTHONPATH": str(PYTHON_DIR), **env}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)], env=full, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_a_notice_before_the_first_should_stop_does_not_kill_and_is_seen(tmp_path):
    p = child(
        """
        import os, signal, time, tapml
        os.kill(os.getpid(), signal.SIGUSR1)   # before any tapml call but the import
        time.sleep(0.1)
        print(tapml.should_stop(), tapml.time_left() is not None)
        """,
        tmp_path,
        TAP_RUN_ID="r",
        TAP_CHECKPOINT_DEADLINE_S="90",
    )
    out, err = p.communicate(timeout=BOUND_S)
    assert (p.returncode, out.split()) == (0, ["True", "True"]), err


def test_the_handler_chains_the_one_it_replaces_and_comes_back_when_replaced(tmp_path):
    p = child(
        """
        import os, signal, time
        seen = []
        signal.signal(signal.SIGTERM, lambda s, f: seen.append("theirs-before"))
        import tapml
        assert not tapml.should_stop()
        os.kill(os.getpid(), signal.SIGTERM); time.sleep(0.1)
        print(tapml.should_stop(), seen)
        """,
        tmp_path,
        TAP_RUN_ID="r",
        TAP_INTERRUPT_SIGNAL="SIGTERM",
    )
    out, err = p.communicate(timeout=BOUND_S)
    assert (p.returncode, out.strip()) == (0, "True ['theirs-before']"), err
    p = child(
        """
        import os, signal, time, tapml
        signal.signal(signal.SIGUSR1, lambda s, f: None)  # the script replaced tapml's handler
        assert not tapml.should_stop()                      # ... which installs itself again
        os.kill(os.getpid(), signal.SIGUSR1); time.sleep(0.1)
        print(tapml.should_stop())
        """,
        tmp_path,
        TAP_RUN_ID="r",
    )
    out, err = p.communicate(timeout=BOUND_S)
    assert (p.returncode, out.strip()) == (0, "True"), err


def test_time_left_follows_taps_deadline(tmp_path):
    info = tmp_path / "notice.json"
    info.write_text(json.dumps({"deadline_ms": int(time.time() * 1000) + 42_000, "kind": "spot", "reason": "test"}))
    p = child("import tapml; print(tapml.should_stop(), round(tapml.time_left()))", tmp_path, TAP_RUN_ID="r", TAP_NOTICE_INFO=str(info))
    out, err = p.communicate(timeout=BOUND_S)
    assert p.returncode == 0, err
    stop, left = out.split()
    assert stop == "True" and 35 <= int(left) <= 42, out


def test_no_notice_means_no_deadline(tapml_clean):
    assert tapml_clean.should_stop() is False and tapml_clean.time_left() is None


def test_a_bad_interrupt_signal_name_is_one_clear_error(tmp_path):
    p = child("import tapml; tapml.should_stop()", tmp_path, TAP_RUN_ID="r", TAP_INTERRUPT_SIGNAL="SIGNOPE")
    _, err = p.communicate(timeout=BOUND_S)
    assert p.returncode == 1 and "TAP_INTERRUPT_SIGNAL='SIGNOPE' is not a signal" in err.strip().splitlines()[-1], err


def test_should_stop_off_the_main_thread_warns_once_when_no_handler_is_installed(tmp_path):
    p = child(
        """
        import signal, threading, warnings
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        import tapml
        from tapml import _core
        _core._notice.installed = None
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            t = threading.Thread(target=lambda: (tapml.should_stop(), tapml.should_stop())); t.start(); t.join()
        print(len(w), "main thread" in str(w[0].message))
        """,
        tmp_path,
        TAP_RUN_ID="r",
    )
    out, err = p.communicate(timeout=BOUND_S)
    assert (p.returncode, out.strip()) == (0, "1 True"), err


def test_every_module_is_python_3_9_syntax():
    import ast

    files = sorted((PYTHON_DIR / "tapml").rglob("*.py"))
    assert len(files) >= 7
    for f in files:
        ast.parse(f.read_text(), filename=str(f), feature_version=(3, 9))


# ---- the checkpoint cadence


def test_checkpoint_due_goes_by_the_cadence_file_then_the_variable_then_300_s(under_tap, monkeypatch):
    tapml, run = under_tap
    assert tapml.checkpoint_interval() == tapml._core.FIRST_CHECKPOINT_S
    monkeypatch.setenv("TAP_CHECKPOINT_INTERVAL_S", "120.5")
    assert tapml.checkpoint_interval() == 120.5
    cadence = run / "cadence.json"
    monkeypatch.setenv("TAP_CADENCE_FILE", str(cadence))
    assert tapml.checkpoint_interval() == 120.5, "no file yet: the variable"
    cadence.write_text(json.dumps({"handed_s": 0.2, "interval_s": 0.2}))
    assert tapml.checkpoint_interval() == 0.2
    # A refresh is read (a new size or mtime), a broken file falls back to the variable.
    cadence.write_text(json.dumps({"handed_s": 0.25, "interval_s": 0.25, "x": 1}))
    assert tapml.checkpoint_interval() == 0.25
    cadence.write_text("{not json")
    assert tapml.checkpoint_interval() == 120.5
    cadence.write_text(json.dumps({"handed_s": 0.2}))
    with tapml.checkpoint(1) as d:
        (d / "w").write_text("1")
    assert not tapml.checkpoint_due(), "a checkpoint just ended"
    time.sleep(0.25)
    assert tapml.checkpoint_due()
