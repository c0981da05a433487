"""Parallelism strategies: ``none`` (plain/replicated) and FSDP2 ``fully_shard`` per block.

Beyond wrapping, a strategy owns the optimizer side of a step: ``attach_optimizer`` (a DeepSpeed
engine is built there), ``zero_grad``, ``backward``, ``optimizer_step`` (reduce, clip, step) and the
optimizer's checkpoint state. The torch strategies here do exactly what the loop did inline before;
:mod:`stream_r1.distributed.deepspeed_strategy` hands the same calls to ZeRO engines.

The model code is single-device code; parallelism is applied from outside in torchtitan's order
(the order torchtitan's parallelize functions use: checkpoint wrappers must sit inside the FSDP units): activation checkpointing, then FSDP. FSDP2 shards every transformer block
and then the root, with ``MixedPrecisionPolicy(param_dtype, reduce_dtype)``, over the HSDP mesh of
:mod:`stream_r1.distributed.mesh`: trainable networks are sharded within a node and replicated
across nodes, the frozen teacher is sharded within a node only. Non-final micro-steps of an accumulation window skip the
gradient reduce-scatter (``set_requires_gradient_sync(False)``, the FSDP2 ``no_sync``; docs/method.md
§5 item 17).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from stream_r1.distributed.collectives import _active, all_reduce_mean_
from stream_r1.distributed.mesh import REPLICATE, SHARD, build_mesh
from stream_r1.distributed.state_dicts import (
    load_sharded_model_state_dict,
    load_sharded_optimizer_state_dict,
    sharded_model_state_dict,
    sharded_optimizer_state_dict,
)
from stream_r1.utils.dtypes import torch_dtype
from stream_r1.utils.logging import get_logger

log = get_logger(__name__)



class Strategy(Protocol):
    """How trainable and frozen networks are wrapped, synchronised and clipped."""

    name: str

    def prepare_trainable(self, model: nn.Module, *, checkpointing: bool) -> nn.Module:
        """Wrap a network that has an optimizer (generator, critic)."""
        ...

    def prepare_frozen(self, model: nn.Module) -> nn.Module:
        """Wrap a frozen network (teacher)."""
        ...

    def set_gradient_sync(self, model: nn.Module, enabled: bool) -> None:
        """Enable/disable gradient reduction for the next backward (no_sync)."""
        ...

    def reduce_gradients(self, model: nn.Module) -> None:
        """Make gradients identical on all ranks before clipping (if the wrapper did not)."""
        ...

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> float:
        """Clip the global gradient norm; returns the norm before clipping."""
        ...

    def attach_optimizer(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """Bind ``optimizer`` to ``model``; returns the optimizer the loop should hold."""
        ...

    def zero_grad(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Clear gradients at the start of an accumulation window."""
        ...

    def backward(self, model: nn.Module, loss: torch.Tensor) -> None:
        """Backpropagate an already accumulation-scaled ``loss`` into ``model``."""
        ...

    def optimizer_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, max_norm: float) -> float:
        """Reduce, clip to ``max_norm`` and step at a window end; returns the norm before clipping."""
        ...

    def model_state_dict(self, model: nn.Module) -> dict[str, Any]:
        """``model``'s state for a sharded checkpoint (DCP): FQN-keyed DTensor shards under FSDP2,
        plain tensors otherwise; also the in-place load template. A collective."""
        ...

    def load_model_state_dict(self, model: nn.Module, state: dict[str, Any]) -> None:
        """Inverse of :meth:`model_state_dict` (``state`` filled by a DCP load); a collective."""
        ...

    def optimizer_state_dict(self, model: nn.Module,
                             optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """``(FQN-keyed state for the sharded checkpoint (initialised, so it is also the load
        template), this rank's own state or None)``; a collective."""
        ...

    def full_parameters(self, model: nn.Module, *, modify: bool = False) -> AbstractContextManager[None]:
        """Inside, ``model``'s parameters can be read as ordinary modules/DTensors (state dicts, EMA,
        digests); with ``modify`` rank 0's in-place changes are kept. A no-op unless parameters are
        partitioned outside the DTensor API (DeepSpeed ZeRO-3); a collective."""
        ...

    def load_optimizer_state_dict(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                                  state: dict[str, Any], local: dict[str, Any] | None) -> None:
        """Inverse of :meth:`optimizer_state_dict` (``state`` filled by a DCP load); a collective."""
        ...


class TorchOptimizerSteps:
    """The optimizer side shared by the torch strategies: a plain ``torch.optim`` optimizer.

    ``optimizer_step`` is ``reduce_gradients`` + ``clip_grad_norm`` + ``optimizer.step()``, in
    that order (the numerics of the loop before strategies owned the step).
    """

    def reduce_gradients(self, model: nn.Module) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> float:
        return _clip(model, max_norm)

    def attach_optimizer(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        return optimizer

    def zero_grad(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)

    def backward(self, model: nn.Module, loss: torch.Tensor) -> None:
        loss.backward()

    def optimizer_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, max_norm: float) -> float:
        self.reduce_gradients(model)
        norm = self.clip_grad_norm(model, max_norm)
        optimizer.step()
        return norm

    def model_state_dict(self, model: nn.Module) -> dict[str, Any]:
        return sharded_model_state_dict(model)

    def load_model_state_dict(self, model: nn.Module, state: dict[str, Any]) -> None:
        load_sharded_model_state_dict(model, state)

    def optimizer_state_dict(self, model: nn.Module,
                             optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, Any] | None]:
        return sharded_optimizer_state_dict(model, optimizer), None

    def load_optimizer_state_dict(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                                  state: dict[str, Any], local: dict[str, Any] | None) -> None:
        load_sharded_optimizer_state_dict(model, optimizer, state)

    def full_parameters(self, model: nn.Module, *, modify: bool = False) -> AbstractContextManager[None]:
        return nullcontext()


def enable_activation_checkpointing(model: nn.Module) -> bool:
    """Turn on non-reentrant per-block activation checkpointing through the diffusers seam.

    Returns:
        True when the model supports it (a diffusers ``ModelMixin`` with checkpointing support).
    """
    enable = getattr(model, "enable_gradient_checkpointing", None)
    if getattr(model, "_supports_gradient_checkpointing", False) and callable(enable):
        enable()
        return True
    log.warning("%s does not support gradient checkpointing; training without it", type(model).__name__)
    return False


def _clip(model: nn.Module, max_norm: float) -> float:
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    return float(norm)


@dataclass(frozen=True)
class _CastLatentInputs:
    """Forward pre-hook: cast the latent (arg 0 / ``hidden_states``) and text (arg 2 /
    ``encoder_hidden_states``) tensors to the FSDP2 compute dtype; timesteps and caches are left alone
    (diffusers casts the time embedding itself; §5 item 12 keeps the time sinusoid precise)."""

    dtype: torch.dtype

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        def cast(x: object) -> object:
            return x.to(self.dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x

        new_args = tuple(cast(a) if i in (0, 2) else a for i, a in enumerate(args))
        new_kwargs = {k: cast(v) if k in ("hidden_states", "encoder_hidden_states") else v for k, v in kwargs.items()}
        return new_args, new_kwargs


@dataclass
class NoShardStrategy(TorchOptimizerSteps):
    """Plain modules; with several ranks each holds a replica and gradients are averaged."""

    name: str = "none"

    def prepare_trainable(self, model: nn.Module, *, checkpointing: bool) -> nn.Module:
        if checkpointing:
            enable_activation_checkpointing(model)
        return model

    def prepare_frozen(self, model: nn.Module) -> nn.Module:
        return model

    def set_gradient_sync(self, model: nn.Module, enabled: bool) -> None:
        """Nothing to do: gradients are averaged once in :meth:`reduce_gradients`."""

    def reduce_gradients(self, model: nn.Module) -> None:
        if not _active():
            return
        for p in model.parameters():
            if p.grad is not None:
                all_reduce_mean_(p.grad)


@dataclass
class FSDP2Strategy(TorchOptimizerSteps):
    """``fully_shard`` per transformer block (``model.blocks``) and the root, over an HSDP mesh.

    Attributes:
        param_dtype: Dtype the parameters are all-gathered in (bf16 on GPU).
        reduce_dtype: Dtype of the gradient reduce-scatter (fp32).
        reshard_after_forward: ZeRO-3-like (True) or ZeRO-2-like (False).
        shard_size: Ranks a network is sharded over (0 = the ranks of a node); the mesh
            replicates across the ``world / shard_size`` groups.
    """

    param_dtype: str = "bfloat16"
    reduce_dtype: str = "float32"
    reshard_after_forward: bool = True
    shard_size: int = 0
    name: str = "fsdp2"
    _mesh: Any = None

    def mesh(self, device_type: str):  # -> DeviceMesh | None
        """The job's ``(replicate, shard)`` mesh, built once (None without a process group)."""
        if self._mesh is None:
            self._mesh = build_mesh(device_type, self.shard_size)
        return self._mesh

    def _shard(self, model: nn.Module, *, frozen: bool = False) -> nn.Module:
        if not _active():
            # fully_shard needs a process group; one process is the unsharded case.
            return model
        mesh = self.mesh(next(model.parameters()).device.type)
        # One replica group is plain FSDP (1-D); the frozen teacher never leaves its node.
        target = mesh[SHARD] if frozen or mesh.size(mesh.mesh_dim_names.index(REPLICATE)) == 1 else mesh
        master = next(model.parameters()).dtype
        compute = torch_dtype(self.param_dtype)
        # FSDP2's own input casting rebuilds dataclass arguments (torch.distributed.utils._apply_to_tensors),
        # which would hand the blocks a *copy* of the KV cache and lose its bookkeeping; so FSDP never
        # touches inputs and only the latent/text tensors entering the root are cast (hook below).
        policy = MixedPrecisionPolicy(
            param_dtype=None if compute == master else compute,
            reduce_dtype=torch_dtype(self.reduce_dtype),
            cast_forward_inputs=False,
        )
        blocks = getattr(model, "blocks", None)
        if isinstance(blocks, nn.ModuleList):
            for block in blocks:
                fully_shard(block, mesh=target, mp_policy=policy, reshard_after_forward=self.reshard_after_forward)
        else:
            log.warning("%s has no .blocks ModuleList; sharding it as one unit", type(model).__name__)
        fully_shard(model, mesh=target, mp_policy=policy, reshard_after_forward=self.reshard_after_forward)
        if compute != master:
            model.register_forward_pre_hook(_CastLatentInputs(compute), with_kwargs=True)
        return model

    def prepare_trainable(self, model: nn.Module, *, checkpointing: bool) -> nn.Module:
        if checkpointing:
            enable_activation_checkpointing(model)
        return self._shard(model)

    def prepare_frozen(self, model: nn.Module) -> nn.Module:
        return self._shard(model, frozen=True)

    def set_gradient_sync(self, model: nn.Module, enabled: bool) -> None:
        if isinstance(model, FSDPModule):
            model.set_requires_gradient_sync(enabled)

    def reduce_gradients(self, model: nn.Module) -> None:
        """FSDP2 already reduce-scattered (averaged) the gradients in the final backward."""
        if _active() and not isinstance(model, FSDPModule):
            NoShardStrategy().reduce_gradients(model)


def make_strategy(name: str, *, param_dtype: str = "bfloat16", reduce_dtype: str = "float32",
                  reshard_after_forward: bool = True, zero_stage: int = 2, grad_clip_norm: float = 10.0,
                  grad_accum_steps: int = 1, micro_batch_size: int = 1, shard_size: int = 0) -> Strategy:
    """Build the strategy named by ``parallel.strategy``.

    Args:
        name: ``none`` | ``fsdp2`` | ``deepspeed``.
        param_dtype, reduce_dtype, reshard_after_forward: FSDP2 mixed precision / resharding
            (``param_dtype`` also selects DeepSpeed bf16).
        shard_size: FSDP2 HSDP shard-group size (0 = ranks per node; see :mod:`stream_r1.distributed.mesh`).
        zero_stage, grad_clip_norm, grad_accum_steps, micro_batch_size: DeepSpeed engine config
            (``gradient_clipping``, ``gradient_accumulation_steps``, ``train_micro_batch_size_per_gpu``).

    Raises:
        ValueError: unknown strategy name, or ``deepspeed`` without DeepSpeed installed / a bad stage.
    """
    if name == "none":
        return NoShardStrategy()
    if name == "fsdp2":
        return FSDP2Strategy(param_dtype, reduce_dtype, reshard_after_forward, shard_size)
    if name == "deepspeed":
        from stream_r1.distributed.deepspeed_strategy import DeepSpeedStrategy, check_deepspeed

        check_deepspeed(zero_stage, param_dtype)
        return DeepSpeedStrategy(zero_stage=zero_stage, param_dtype=param_dtype, grad_clip_norm=grad_clip_norm,
                                 grad_accum_steps=grad_accum_steps, micro_batch_size=micro_batch_size)
    raise ValueError(f"parallel.strategy={name!r} is not one of ['none', 'fsdp2', 'deepspeed']")
