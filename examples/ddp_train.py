#!/usr/bin/env python3
"""A tiny data-parallel job for `tap launch` (and the local 2-node test), written with tapml:
every rank fits y = 3x + 2 on its own shard of synthetic data, gradients are averaged with
all_reduce (gloo on CPU, NCCL on GPUs), rank 0 records metrics, every rank checkpoints (its
node's shard of the step). Run it under torchrun:

    torchrun --nnodes=$NNODES --node-rank=$NODE_RANK --master-addr=$MASTER_ADDR \\
        --master-port=$MASTER_PORT --nproc-per-node=1 examples/ddp_train.py

Steps come from `tap params set steps N` (default 50). A spot notice on any node stops every
rank after the same step (`tapml.torch.should_stop_all()`, one all-reduce), after a final
checkpoint on every rank; `tap run --resume` on every node restores its own shard.
"""
import sys
from pathlib import Path

import torch
import torch.distributed as dist

try:
    import tapml
except ImportError:  # outside tap run, without `pip install ./python`: this checkout's copy
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
    import tapml
import tapml.torch

dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
rank, world = dist.get_rank(), dist.get_world_size()
steps = int(tapml.hparams({"steps": 50})["steps"])

w = torch.zeros(2, requires_grad=True)
start = 0
if tapml.restored():
    state = torch.load(tapml.restored() / "ddp.pt")
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
    stop = tapml.torch.should_stop_all()  # a notice on any node stops every rank here
    tapml.log(step, loss=loss.item(), world=world)  # rank 0 records; a no-op elsewhere
    # Every rank at the same steps: in a job of several nodes each node's tap run stores its
    # node's shard of the step (DDP's are equal, and stored once: objects are content-addressed).
    if step % 10 == 0 or step == steps or stop:
        with tapml.checkpoint(step) as d:
            torch.save({"w": w.detach(), "step": step}, d / "ddp.pt")
    if stop:
        break
dist.destroy_process_group()
if rank == 0:
    print(f"done: w={w[0].item():.3f}, b={w[1].item():.3f}, world={world}")
