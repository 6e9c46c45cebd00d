"""tapml with PyTorch, the Hugging Face Trainer and Lightning, under the real `tap run`.

These need torch (and transformers + accelerate, or lightning). scripts/tools.sh installs
them (pinned, CPU use of PyPI's wheels) into the venv whose pytest CI runs; elsewhere, where
they cannot be imported, each test says why and stops."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from typing import List
from pathlib import Path

import pytest

from conftest import BOUND_S, EXAMPLES, PYTHON_DIR

WHY = "is not importable here (scripts/tools.sh installs it into the venv CI's pytest runs in)"


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


DCP = """
import os, sys
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor
import tapml, tapml.torch

rank, world = int(os.environ["TAP_SHARD_RANK"]), int(os.environ["TAP_WORLD_SIZE"])
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:" + sys.argv[1], rank=rank, world_size=world)
mesh = init_device_mesh("cpu", (world,))

def state(step):
    full = torch.arange(12, dtype=torch.float32) * step          # sharded across the ranks
    return {"model": {"w": distribute_tensor(full, mesh, [Shard(0)]),
                      "bias": torch.full((3,), float(step))},     # every rank holds all of it
            "step": step}

if sys.argv[2] == "save":
    tapml.torch.dcp_save(state(5), 5)
    print("rank", rank, "saved", flush=True)
else:
    got = state(0)
    step = tapml.torch.dcp_load(got)
    want = state(5)
    same = (torch.equal(got["model"]["w"].full_tensor(), want["model"]["w"].full_tensor())
            and torch.equal(got["model"]["bias"], want["model"]["bias"]) and got["step"] == 5 and step == 5)
    print("rank", rank, "of", world, "loaded step", step, "equal" if same else "DIFFERENT", flush=True)
    if not same:
        sys.exit(3)
dist.barrier()  # every rank is done before any tears gloo down (else: "terminate called ...")
dist.destroy_process_group()
sys.stdout.flush()
os._exit(0)  # no C++ teardown at exit: gloo's threads can abort it ("terminate called ...")
"""


def test_dcp_saves_sharded_and_resumes_with_the_same_and_another_world_size(tap, tmp_path):
    """A DCP job of two ranks (gloo, CPU, one `tap run --group` each) saves a state with a
    tensor sharded across the ranks and one every rank holds: each rank's shard of the step is
    stored and the step commits. Resumed with two ranks, each rank loads from its own shard
    alone; resumed with three (`--restore all`), each loads from every shard, resharded."""
    need("torch")
    script = tmp_path / "dcp_job.py"
    script.write_text(DCP)

    def group(phase: str, world: int, *flags: str) -> List[subprocess.CompletedProcess]:
        port = str(free_port())
        procs = [
            tap.start("run", "-e", "dcp", *flags, "--rank", str(r), "--world-size", str(world), "--", sys.executable, str(script), port, phase)
            for r in range(world)
        ]
        outs = []
        for p in procs:
            o, e = p.communicate(timeout=BOUND_S * 2)
            outs.append(subprocess.CompletedProcess(p.args, p.returncode, o, e))
        return outs

    saved = group("save", 2, "--group", "d")
    assert all(o.returncode == 0 for o in saved), [o.stderr for o in saved]
    assert any("step 5 of job d committed: all 2 shards stored" in o.stderr for o in saved), [o.stderr for o in saved]
    same = group("load", 2, "--resume", "d")
    assert all(o.returncode == 0 for o in same), [o.stdout + o.stderr for o in same if o.returncode != 0]
    for r, o in enumerate(same):
        assert f"rank {r} of 2 loaded step 5 equal" in o.stdout, o.stdout + o.stderr
        assert f"restoring rank {r}'s shard of step 5 of job d" in o.stderr, o.stderr
    refused = group("load", 3, "--resume", "d")
    assert all(o.returncode == 1 for o in refused), [o.stderr for o in refused]
    assert "committed by 2 ranks and this job has 3" in refused[0].stderr, refused[0].stderr
    resharded = group("load", 3, "--resume", "d", "--restore", "all")
    assert all(o.returncode == 0 for o in resharded), [o.stdout + o.stderr for o in resharded if o.returncode != 0]
    for r, o in enumerate(resharded):
        assert f"rank {r} of 3 loaded step 5 equal" in o.stdout, o.stdout + o.stderr
