"""Model and optimizer state dicts: full (gathered) ones and sharded ones, both FQN-keyed.

Full state dicts (``get_model_state_dict(full_state_dict=True, cpu_offload=True)``) are what the
final export and the EMA use. Training checkpoints store the *sharded* ones (each rank's DTensor
shards; plain tensors without FSDP2) through ``torch.distributed.checkpoint``, which reshards them
on load, so they still load at any world size. Every function here is a collective under a
process group: call it on all ranks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor

from stream_r1.distributed.collectives import _active

_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Gather ``model``'s parameters and buffers as full CPU tensors.

    Returns:
        ``{fqn: tensor}`` on rank 0 (and at world size 1); an empty dict on other ranks.
    """
    sd = get_model_state_dict(model, options=_GATHER)
    return {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in sd.items()}


def load_full_model_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full state dict held by rank 0 (other ranks may pass ``{}``) into ``model``."""
    opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=_active(), strict=True)
    set_model_state_dict(model, state, options=opts)


def full_optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """FQN-keyed, gathered optimizer state (full on rank 0, empty elsewhere)."""
    return get_optimizer_state_dict(model, optimizer, options=_GATHER)


def load_full_optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load an FQN-keyed full optimizer state held by rank 0 into ``optimizer``."""
    opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=_active())
    set_optimizer_state_dict(model, optimizer, state, options=opts)


def sharded_model_state_dict(model: nn.Module) -> dict[str, Any]:
    """``{fqn: DTensor shard | tensor}`` referencing ``model``'s own storage (no gather, no copy)."""
    return get_model_state_dict(model)


def load_sharded_model_state_dict(model: nn.Module, state: dict[str, Any]) -> None:
    """Load a (resharded) :func:`sharded_model_state_dict` back into ``model`` (strict)."""
    set_model_state_dict(model, state, options=StateDictOptions(strict=True))


def sharded_optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """FQN-keyed optimizer state with sharded moments; initialises empty Adam states (a load template)."""
    return get_optimizer_state_dict(model, optimizer)


def load_sharded_optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a (resharded) :func:`sharded_optimizer_state_dict` back into ``optimizer``."""
    set_optimizer_state_dict(model, optimizer, state)


@torch.no_grad()
def parameter_digest(model: nn.Module) -> str:
    """sha256 of every parameter, fully gathered on *this* rank (``DTensor.full_tensor``).

    Unlike :func:`full_model_state_dict` (rank 0 only) every rank computes it, so comparing digests
    across ranks checks that all replicas/shards agree. A collective under FSDP2.
    """
    import hashlib

    h = hashlib.sha256()
    for name, p in model.named_parameters():
        full = p.full_tensor() if isinstance(p, DTensor) else p
        h.update(name.encode())
        h.update(full.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()
