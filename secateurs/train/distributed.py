"""Helpers for running ``recover`` (or any secateurs step) under ``torchrun`` with DistributedDataParallel.

``recover`` itself needs no change: give it the DDP-wrapped model and this rank's share of each
global batch, and DDP averages the gradients, so with equal shares every rank takes the same step
the single-process run would take on the whole batch (except batch-norm statistics, which each
rank computes on its share unless ``nn.SyncBatchNorm.convert_sync_batchnorm`` syncs them: GPU only). Plans are pure
functions of the model, inputs and seed, so every rank computes the same one; ``same_on_every_rank``
checks that, and ``is_main`` lets rank 0 alone write results and checkpoints::

    torch.distributed.init_process_group("gloo")          # torchrun sets rank and world size
    p = sc.plan(model, x, 0.5); same_on_every_rank(p.to_json(), "plan")
    small = DDP(sc.apply(model, p))
    recover(small, shard(global_batches), steps=500)
    if is_main(): sc.save(small.module, p, "out/")
    barrier()

Outside a process group (a plain ``python`` run) every helper behaves as for a single rank 0.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if _active() else 0


def world_size() -> int:
    """Number of processes in the group (1 outside a process group)."""
    return dist.get_world_size() if _active() else 1


def is_main() -> bool:
    """True on rank 0, the one process that writes results and checkpoints."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op outside a process group): e.g. until rank 0 has written a checkpoint."""
    if _active():
        dist.barrier()


def same_on_every_rank(value: Any, what: str = "value") -> None:
    """Raise RuntimeError, on every rank, unless ``value`` (picklable, comparable) is equal on all ranks."""
    if not _active():
        return
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    differing = [r for r, v in enumerate(values) if v != values[0]]
    if differing:
        raise RuntimeError(f"{what} differs between rank 0 and rank(s) {differing}: every rank must compute the "
                           "same one (same model, inputs, seed and secateurs version)")


def shard(batches: Iterable[Any]) -> Iterable[Any]:
    """This rank's contiguous slice of every ``(inputs, targets)`` global batch; re-iterable if ``batches`` is.

    Each tensor (nested in tuples, lists, dicts) is split along dimension 0, whose size must be
    divisible by the world size, so every rank holds an equal share and DDP's gradient average equals
    the full batch's gradient.
    """
    shards = _Shards(batches, rank(), world_size())
    return iter(shards) if iter(batches) is batches else shards  # a one-shot iterator stays one-shot


class _Shards:
    def __init__(self, batches: Iterable[Any], rank: int, world: int):
        self.batches, self.rank, self.world = batches, rank, world

    def __iter__(self) -> Iterator[Any]:
        for i, batch in enumerate(self.batches):
            yield _slice(batch, self.rank, self.world, i)


def _slice(obj: Any, r: int, world: int, index: int) -> Any:
    if isinstance(obj, torch.Tensor):
        if obj.dim() == 0 or obj.shape[0] % world:
            raise ValueError(f"shard: batch {index} has a tensor of shape {tuple(obj.shape)} whose first dimension "
                             f"is not divisible by the world size {world}; use a global batch size that is")
        n = obj.shape[0] // world
        return obj[r * n:(r + 1) * n]
    if isinstance(obj, dict):
        return {k: _slice(v, r, world, index) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_slice(v, r, world, index) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_slice(v, r, world, index) for v in obj)
    return obj
