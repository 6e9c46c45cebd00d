#!/usr/bin/env python3
"""A tiny data-parallel job for `tap launch` (and the local 2-node test): every rank fits
y = 3x + 2 on its own shard of synthetic data, gradients are averaged with all_reduce (gloo on
CPU, NCCL on GPUs), rank 0 writes metrics and checkpoints for tap. Run it under torchrun:

    torchrun --nnodes=$NNODES --node-rank=$NODE_RANK --master-addr=$MASTER_ADDR \
        --master-port=$MASTER_PORT --nproc-per-node=1 examples/ddp_train.py

Steps come from TAP_HP_STEPS (default 50); on SIGUSR1 (tap's interruption notice) rank 0
checkpoints and every rank stops after the current step.
"""
import json
import os
import signal

import torch
import torch.distributed as dist

stop = False


def on_notice(*_):
    global stop
    stop = True


signal.signal(signal.SIGUSR1, on_notice)
dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
rank, world = dist.get_rank(), dist.get_world_size()
steps = int(os.environ.get("TAP_HP_STEPS", "50"))
ckpt_dir = os.environ.get("TAP_CHECKPOINT_DIR", ".")
ckpt = os.path.join(ckpt_dir, "ddp.pt")
metrics = os.environ.get("TAP_METRICS_FILE")

w = torch.zeros(2, requires_grad=True)
start = 0
if os.path.exists(ckpt):
    state = torch.load(ckpt)
    w.data.copy_(state["w"])
    start = state["step"]
    if rank == 0:
        print(f"resumed at step {start}")

gen = torch.Generator().manual_seed(1234 + rank)
for step in range(start + 1, steps + 1):
    x = torch.rand(64, generator=gen)
    y = 3 * x + 2
    loss = ((w[0] * x + w[1] - y) ** 2).mean()
    loss.backward()
    with torch.no_grad():
        dist.all_reduce(w.grad)
        w -= 0.5 * w.grad / world
        w.grad.zero_()
    # Every rank agrees on stopping: a notice on any node stops all of them.
    flag = torch.tensor([1.0 if stop else 0.0])
    dist.all_reduce(flag)
    last = step == steps or flag.item() > 0
    if rank == 0 and metrics:
        with open(metrics, "a") as f:
            f.write(json.dumps({"step": step, "loss": loss.item(), "world": world}) + "\n")
    if rank == 0 and (step % 10 == 0 or last):
        torch.save({"w": w.detach(), "step": step}, ckpt + ".tmp")
        os.replace(ckpt + ".tmp", ckpt)
        if metrics:
            with open(metrics, "a") as f:
                f.write(json.dumps({"step": step, "checkpoint": True}) + "\n")
    if last:
        break
dist.destroy_process_group()
if rank == 0:
    print(f"done: w={w[0].item():.3f}, b={w[1].item():.3f}, world={world}")
