#!/usr/bin/env python3
"""A small training job that shows how a program cooperates with `tap run`.

Standard library only. It fits y = 3x + 2 by SGD and:
  * reads its hyperparameters from TAP_HPARAMS_FILE (tap writes it; TAP_HP_<NAME> too),
  * appends metrics as JSON lines to TAP_METRICS_FILE,
  * writes a checkpoint to TAP_CHECKPOINT_DIR every `checkpoint_every` steps (write to a
    temporary name, then rename, then announce it with {"checkpoint": true}),
  * resumes from TAP_CHECKPOINT_DIR/state.json when tap restored one (`tap run --resume`),
  * on SIGUSR1 (tap's interruption notice) checkpoints at the next step and exits.

Outside tap it runs too, with defaults and a ./checkpoint directory.
"""
import json
import math
import os
import random
import signal
import sys
import time

hparams = {"learning_rate": "0.05", "batch_size": "16", "epochs": "3", "steps_per_epoch": "40", "checkpoint_every": "20"}
if os.environ.get("TAP_HPARAMS_FILE"):
    with open(os.environ["TAP_HPARAMS_FILE"]) as f:
        hparams.update(json.load(f))
lr = float(hparams["learning_rate"])
batch = int(hparams["batch_size"])
total_steps = int(hparams["epochs"]) * int(hparams["steps_per_epoch"])
every = int(hparams["checkpoint_every"])
step_seconds = float(os.environ.get("TAP_EXAMPLE_STEP_SECONDS", "0.05"))

ckpt_dir = os.environ.get("TAP_CHECKPOINT_DIR", "checkpoint")
metrics_path = os.environ.get("TAP_METRICS_FILE", os.devnull)
state_path = os.path.join(ckpt_dir, "state.json")
os.makedirs(ckpt_dir, exist_ok=True)

interrupted = False


def on_notice(signum, frame):
    global interrupted
    interrupted = True


signal.signal(signal.SIGUSR1, on_notice)

state = {"step": 0, "w": 0.0, "b": 0.0, "seed": 42}
if os.path.exists(state_path):
    with open(state_path) as f:
        state = json.load(f)
    print(f"resumed at step {state['step']} (w={state['w']:.3f}, b={state['b']:.3f})", flush=True)
rng = random.Random(state["seed"] + state["step"])


def emit(record):
    with open(metrics_path, "a") as f:
        f.write(json.dumps(record) + "\n")


def checkpoint():
    tmp = state_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, state_path)
    emit({"checkpoint": True, "step": state["step"]})


while state["step"] < total_steps:
    xs = [rng.uniform(-1, 1) for _ in range(batch)]
    ys = [3 * x + 2 + rng.gauss(0, 0.1) for x in xs]
    errs = [state["w"] * x + state["b"] - y for x, y in zip(xs, ys)]
    loss = sum(e * e for e in errs) / batch
    state["w"] -= lr * 2 * sum(e * x for e, x in zip(errs, xs)) / batch
    state["b"] -= lr * 2 * sum(errs) / batch
    state["step"] += 1
    emit({"step": state["step"], "loss": loss, "w": state["w"], "b": state["b"]})
    if state["step"] % 10 == 0:
        print(f"step {state['step']}/{total_steps} loss {loss:.5f}", flush=True)
    if state["step"] % every == 0 or interrupted:
        checkpoint()
    if interrupted:
        print(f"interruption notice: checkpointed at step {state['step']}, exiting", flush=True)
        sys.exit(0)
    time.sleep(step_seconds)

checkpoint()
print(f"done: w={state['w']:.3f} b={state['b']:.3f} (true 3, 2); rmse {math.sqrt(loss):.4f}", flush=True)
