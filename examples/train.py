#!/usr/bin/env python3
"""A small training job under `tap run`, written with tapml (python/tapml; `tap run` puts it
on PYTHONPATH, no install step).

Standard library only. It fits y = 3x + 2 by SGD. tapml gives it its hyperparameters
(`tap params`, numbers as numbers), records its metrics, publishes a checkpoint every
`checkpoint_every` steps (0: when `tapml.checkpoint_due()` says, at the interval tap measured
for the run) and says when a spot interruption notice arrived; it then checkpoints at once
and exits. After `tap run --resume` it goes on from the restored step.

Outside tap it runs the same (metrics to stderr, checkpoints in ./checkpoints).
"""
import json
import math
import os
import random
import sys
import time
from pathlib import Path

try:
    import tapml
except ImportError:  # outside tap run, without `pip install ./python`: this checkout's copy
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
    import tapml

hp = tapml.hparams({"learning_rate": 0.05, "batch_size": 16, "epochs": 3, "steps_per_epoch": 40, "checkpoint_every": 20})
lr, batch, every = float(hp["learning_rate"]), int(hp["batch_size"]), int(hp["checkpoint_every"])
total_steps = int(hp["epochs"]) * int(hp["steps_per_epoch"])
step_seconds = float(os.environ.get("TAP_EXAMPLE_STEP_SECONDS", "0.05"))

state = {"step": 0, "w": 0.0, "b": 0.0, "seed": 42}
loss = math.nan
if tapml.restored():
    state = json.loads((tapml.restored() / "state.json").read_text())
    print(f"resumed at step {state['step']} (w={state['w']:.3f}, b={state['b']:.3f})", flush=True)
rng = random.Random(state["seed"] + state["step"])


def save():
    with tapml.checkpoint(state["step"]) as d:
        (d / "state.json").write_text(json.dumps(state))


while state["step"] < total_steps:
    xs = [rng.uniform(-1, 1) for _ in range(batch)]
    ys = [3 * x + 2 + rng.gauss(0, 0.1) for x in xs]
    errs = [state["w"] * x + state["b"] - y for x, y in zip(xs, ys)]
    loss = sum(e * e for e in errs) / batch
    state["w"] -= lr * 2 * sum(e * x for e, x in zip(errs, xs)) / batch
    state["b"] -= lr * 2 * sum(errs) / batch
    state["step"] += 1
    tapml.log(state["step"], loss=loss, w=state["w"], b=state["b"])
    if state["step"] % 10 == 0:
        print(f"step {state['step']}/{total_steps} loss {loss:.5f}", flush=True)
    stop = tapml.should_stop()
    due = tapml.checkpoint_due() if every == 0 else state["step"] % every == 0
    if stop or due or state["step"] == total_steps:
        save()
    if stop:
        left = tapml.time_left()
        print(f"interruption notice: checkpointed at step {state['step']}, exiting"
              + (f" ({left:.0f} s before the deadline)" if left is not None else ""), flush=True)
        sys.exit(0)
    time.sleep(step_seconds)

print(f"done: w={state['w']:.3f} b={state['b']:.3f} (true 3, 2); rmse {math.sqrt(loss):.4f}", flush=True)
