"""Collectives that work with or without a process group (identities at world size 1).

Draws that every rank must agree on (the exit step of a rollout, docs/method.md §5 item 22) are made on rank 0
and broadcast through :func:`broadcast_from_rank0`.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def broadcast_from_rank0(value: T) -> T:
    """Return rank 0's ``value`` on every rank.

    Args:
        value: A tensor (broadcast in place on a copy) or any picklable object.

    Returns:
        Rank 0's value (the argument itself without a process group).
    """
    if not _active():
        return value
    if isinstance(value, torch.Tensor):
        out = value.detach().clone()
        if dist.get_backend() == "nccl" and out.device.type != "cuda":
            moved = out.cuda()
            dist.broadcast(moved, src=0)
            return moved.to(value.device)  # type: ignore[return-value]
        dist.broadcast(out, src=0)
        return out  # type: ignore[return-value]
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over ranks (a copy; the input is left unchanged)."""
    out = tensor.detach().clone()
    if not _active():
        return out
    if dist.get_backend() == "nccl" and out.device.type != "cuda":
        moved = out.cuda()
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        return (moved / dist.get_world_size()).to(tensor.device)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def all_reduce_mean_(tensor: torch.Tensor) -> torch.Tensor:
    """In-place mean over ranks (used to replicate gradients without FSDP)."""
    if _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(dist.get_world_size())
    return tensor


def all_gather_object(value: Any) -> list[Any]:
    """Every rank's ``value`` in rank order (``[value]`` without a process group)."""
    if not _active():
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def barrier() -> None:
    """Synchronise all ranks (no-op without a process group)."""
    if _active():
        dist.barrier()


_CHECKPOINT_GROUP: list[Any] = []


def checkpoint_group() -> Any | None:
    """A gloo process group over all ranks for checkpoint I/O (None without a process group).

    Asynchronous checkpoint saves issue collectives from a background thread; on their own group
    they never interleave with the training loop's collectives, and gloo also serves NCCL jobs
    (DCP's async save needs a CPU backend). Created on first use, which must happen on every rank
    at the same point (the trainer's constructor).
    """
    if not _active():
        return None
    if not _CHECKPOINT_GROUP:
        _CHECKPOINT_GROUP.append(dist.new_group(backend="gloo"))
    return _CHECKPOINT_GROUP[0]


def forget_checkpoint_group() -> None:
    """Drop the cached group (the process group it belongs to is being destroyed)."""
    _CHECKPOINT_GROUP.clear()
