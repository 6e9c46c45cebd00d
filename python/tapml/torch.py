"""tapml for ``torch.distributed`` jobs (importable only where PyTorch is)."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist

from . import _core
from ._core import should_stop

__all__ = ["dcp_load", "dcp_save", "should_stop_all"]

#: The file DCP keeps its metadata in (torch.distributed.checkpoint.filesystem).
DCP_METADATA = ".metadata"


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


# --------------------------------------------------------------------------------------
# torch.distributed.checkpoint (DCP): every rank's shard, restorable on its own


def _dcp() -> Any:
    import torch.distributed.checkpoint as dcp

    return dcp


def _planner() -> Any:
    """DCP's default save planner, with one change: DCP writes an item several ranks hold (a
    replicated tensor, a scalar) once, in one rank's file, so another rank could not load from
    its own shard alone. The global plan and metadata stay DCP's; each rank's own plan gets
    back the items DCP de-duplicated away from it, so every rank writes all it holds."""
    from torch.distributed.checkpoint.default_planner import DefaultSavePlanner

    class _EveryRankWritesItsOwn(DefaultSavePlanner):
        def _create_global_plan(self, all_plans: List[Any]) -> Any:  # DCP's hook
            global_plan, metadata = super()._create_global_plan(all_plans)
            def key(item: Any) -> Any:  # an item, whatever index hint the plan gave it
                return (item.index.fqn, item.index.offset)

            # Each item's index as the global plan wrote it (hints rewritten).
            index = {key(i): i.index for p in global_plan for i in p.items}
            plans = []
            for own, kept in zip(all_plans, global_plan):
                have = {key(i) for i in kept.items}
                back = [
                    dataclasses.replace(i, index=index[key(i)]) for i in own.items if key(i) not in have and key(i) in index
                ]
                plans.append(dataclasses.replace(kept, items=list(kept.items) + back))
            return plans, metadata

    return _EveryRankWritesItsOwn()


def _writer(path: Path) -> Any:
    """DCP's FileSystemWriter into ``path`` that keeps what this rank wrote (its
    WriteResults), for the rank's own view of the metadata."""
    dcp = _dcp()

    class _Writer(dcp.FileSystemWriter):
        written: List[Any] = []

        def write_data(self, plan: Any, planner: Any) -> Any:
            fut = super().write_data(plan, planner)
            fut.wait()
            self.written = list(fut.value())
            return fut

    return _Writer(str(path))


def _node_key() -> str:
    """Which shard this process's files belong to: its tap run's rank (a node), else its own
    global rank."""
    return os.environ.get("TAP_SHARD_RANK") or str(_core.rank())


def dcp_save(state_dict: Dict[str, Any], step: int, process_group: Optional[Any] = None) -> None:
    """Saves ``state_dict`` with ``torch.distributed.checkpoint`` as the checkpoint of
    ``step``: a collective, call it on every rank at the same step.

    In a sharded job (``tap run --group``, a managed job of several nodes) every rank's files
    go into its node's shard of the step (:func:`tapml.checkpoint`), and each shard is
    restorable on its own: every rank writes every tensor it holds (DCP would write a tensor
    several ranks hold once, in one rank's file) and its shard's ``.metadata`` points each
    of them into its own files. Resume with :func:`dcp_load`; after ``tap run --resume
    --restore all`` (another world size) it reshards from every rank's shard.
    """
    dcp = _dcp()
    with _core.checkpoint(step) as d:
        writer = _writer(d)
        metadata = dcp.save(state_dict, storage_writer=writer, planner=_planner(), process_group=process_group)
        mine = [(_node_key(), writer.written)]
        if dist.is_available() and dist.is_initialized():
            everyone: List[Any] = [None] * dist.get_world_size(process_group)
            dist.all_gather_object(everyone, mine[0], group=process_group)
            mine = [e for e in everyone if e is not None and e[0] == _node_key()]
        own = dict(metadata.storage_data)
        for _, results in mine:
            own.update({wr.index: wr.storage_data for wr in results})
        if _core.publishes_checkpoints() or not _core.sharded_job():
            tmp = d / (DCP_METADATA + ".tapml.tmp")
            with open(tmp, "wb") as f:
                pickle.dump(dataclasses.replace(metadata, storage_data=own), f)
            os.replace(tmp, d / DCP_METADATA)


def dcp_load(state_dict: Dict[str, Any], process_group: Optional[Any] = None) -> Optional[int]:
    """Loads the restored checkpoint (``tap run --resume``) into ``state_dict`` in place with
    ``torch.distributed.checkpoint`` — a collective, on every rank — and returns its step;
    None (``state_dict`` untouched) when nothing was restored. Each rank reads its own shard;
    after ``--restore all`` every shard is read, so the job may have another world size than
    the one that saved."""
    restored = _core.restored()  # after --restore all: one view of every shard
    if restored is None:
        return None
    if not (restored / DCP_METADATA).is_file():
        raise _core.TapmlError(
            f"tapml.torch.dcp_load: {restored} has no {DCP_METADATA}: not a checkpoint of tapml.torch.dcp_save"
        )
    dcp = _dcp()
    dcp.load(state_dict, storage_reader=dcp.FileSystemReader(str(restored)), process_group=process_group)
    return _core.restored_step()
