"""tapml for ``torch.distributed`` jobs (importable only where PyTorch is)."""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.distributed as dist

from ._core import should_stop

__all__ = ["should_stop_all"]


def should_stop_all(group: Optional[Any] = None) -> bool:
    """:func:`tapml.should_stop`, agreed across every rank: True on all ranks once any rank's
    node got an interruption notice (one all-reduce of one number).

    A collective: call it on every rank of ``group`` at the same point of every step (or
    every N steps), then checkpoint on rank 0 and stop on all. Without an initialised
    process group it is :func:`tapml.should_stop`.
    """
    local = should_stop()
    if not (dist.is_available() and dist.is_initialized()):
        return local
    device = torch.device("cpu")
    if dist.get_backend(group) == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    flag = torch.tensor([1 if local else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
    return bool(flag.item())
