"""tapml with PyTorch, the Hugging Face Trainer and Lightning, under the real `tap run`.

These need torch (and transformers + accelerate, or lightning): where they cannot be
imported each test says why and stops. CI's machine does not install them (PyPI's torch
wheels pull gigabytes of CUDA libraries); run them where they are importable."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import BOUND_S, EXAMPLES, PYTHON_DIR

WHY = "is not importable here (CI does not install it: PyPI's torch wheels pull gigabytes of CUDA libraries)"


def need(*modules: str) -> None:
    for m in modules:
        pytest.importorskip(m, reason=f"{m} {WHY}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_should_stop_all_stops_every_rank_at_the_same_step(tmp_path):
    need("torch")
    body = textwrap.dedent(
        """
        import os, signal, sys
        sys.path.insert(0, sys.argv[3])
        import torch.distributed as dist
        import tapml.torch
        rank = int(sys.argv[1])
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{sys.argv[2]}", rank=rank, world_size=2)
        for step in range(1, 1000):
            if rank == 1 and step == 7:
                os.kill(os.getpid(), signal.SIGUSR1)   # rank 1's node got the notice
            if tapml.torch.should_stop_all():
                print(step, tapml.should_stop())
                break
        dist.destroy_process_group()
        """
    )
    port = str(free_port())
    ranks = [
        subprocess.Popen([sys.executable, "-c", body, str(r), port, str(PYTHON_DIR)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for r in (0, 1)
    ]
    outs = [p.communicate(timeout=BOUND_S) for p in ranks]
    assert all(p.returncode == 0 for p in ranks), [e for _, e in outs]
    assert [o.split() for o, _ in outs] == [["7", "False"], ["7", "True"]], "both stop at step 7; only rank 1 had the notice"


def test_hf_trainer_is_interrupted_and_resumed_with_every_step_exactly_once(tap):
    need("torch", "transformers", "accelerate")
    tap.params(max_steps=1000, logging_steps=1, save_steps=200)
    cmd = ["run", "-e", "hf", "--", sys.executable, str(EXAMPLES / "hf_train.py")]
    first = tap.interrupt_after(tap.start(*cmd), points=40)
    assert first.returncode == 75, first.stderr
    assert "interruption notice: checkpointed at step" in first.stdout, first.stdout
    run = tap.runs()[0]
    assert run["status"] == "interrupted" and run["interruption"]["verdict"]["verdict"] == "committed", run
    done = tap.steps(run["run_id"])
    stopped = int(first.stdout.split("checkpointed at step ")[1].split(",")[0])
    assert done[-1] == stopped and 0 < stopped < 1000

    second = tap("run", "-e", "hf", "--resume", "--", sys.executable, str(EXAMPLES / "hf_train.py"))
    assert f"resuming from the checkpoint of step {stopped}" in second.stdout, second.stdout
    assert "done at step 1000" in second.stdout
    again = tap.runs()[0]
    assert again["run_id"] == run["run_id"] and len(again["attempts"]) == 1, "attempt 2 of the same run"
    assert "recomputed_steps" not in again, again
    assert tap.steps(run["run_id"]) == list(range(1, 1001)), "every step once, the Trainer's own step counter restored"
    assert "TapmlWarning" not in second.stderr, second.stderr


LIGHTNING = """
import sys, time
import torch
from torch import nn
import tapml
from tapml.integrations.lightning import TapCallback, ckpt_path
try:
    import lightning.pytorch as L
except ImportError:
    import pytorch_lightning as L

class Fit(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(1, 1)
    def training_step(self, batch, i):
        x, y = batch
        loss = ((self.lin(x) - y) ** 2).mean()
        self.log("loss", loss, on_step=True, prog_bar=False)
        time.sleep(0.01)
        return loss
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

torch.manual_seed(0)
x = torch.rand(4096, 1)
data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, 3 * x + 2), batch_size=8)
trainer = L.Trainer(max_steps=300, log_every_n_steps=1, callbacks=[TapCallback(every_n_train_steps=50)],
                    logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu")
path = ckpt_path()
print("resuming from", path, tapml.restored_step(), flush=True)
trainer.fit(Fit(), data, ckpt_path=path)
print("stopped" if tapml.should_stop() else "done", "at step", trainer.global_step, flush=True)
"""


def test_lightning_is_interrupted_and_resumed_with_every_step_exactly_once(tap, tmp_path):
    need("torch")
    pytest.importorskip("lightning", reason=f"lightning {WHY}")
    s = tmp_path / "fit.py"
    s.write_text(LIGHTNING)
    first = tap.interrupt_after(tap.start("run", "-e", "pl", "--", sys.executable, str(s)), points=30)
    assert first.returncode == 75, first.stderr
    stopped = int(first.stdout.split("stopped at step ")[1].split()[0])
    run = tap.runs()[0]
    assert run["status"] == "interrupted" and run["interruption"]["verdict"]["verdict"] == "committed", run
    done = tap.steps(run["run_id"])
    assert done[-1] == stopped and 0 < stopped < 300

    second = tap("run", "-e", "pl", "--resume", "--", sys.executable, str(s))
    assert f"last.ckpt {stopped}" in second.stdout, second.stdout
    assert "done at step 300" in second.stdout, second.stdout
    again = tap.runs()[0]
    assert again["run_id"] == run["run_id"] and len(again["attempts"]) == 1, "attempt 2 of the same run"
    assert "recomputed_steps" not in again, again
    assert tap.steps(run["run_id"]) == list(range(1, 301)), "every step once, Lightning's loops restored"
