"""Optional DeepSpeed ZeRO backend behind the :class:`~stream_r1.distributed.fsdp.Strategy` interface.

A DeepSpeed engine owns backward, gradient reduction, clipping and the optimizer step ("one model +
one optimizer per engine": DeepSpeed's engine API takes exactly one of each), so DMD gets two engines: one for the generator and one
for the critic, each built in :meth:`DeepSpeedStrategy.attach_optimizer` around the loop's own
``torch.optim.AdamW`` (β1 = 0; a client optimizer, so nothing is JIT-compiled, the CPU equivalent
of ``"torch_adam": true``). The loop keeps calling the *raw* modules for forward: under ZeRO-2 every
rank holds full parameters and only gradients and optimizer states are partitioned; under ZeRO-3
parameters are partitioned too and gathered by the engine's module hooks in forward, and by
:meth:`DeepSpeedStrategy.full_parameters` (``GatheredParameters``) for state dicts, EMA and digests.

- Accumulation: the trainer marks each micro-step's boundary (``set_gradient_sync`` ->
  ``engine.set_gradient_accumulation_boundary``) and passes an already ``1/accum``-scaled loss
  (``engine.backward(loss, scale_wrt_gas=False)``); ``engine.step()`` runs once per window end and
  clips with ``gradient_clipping`` (= ``optim.grad_clip_norm``).
- Frozen teacher: kept replicated (no ``deepspeed.init_inference``); ``prepare_frozen`` is identity.
- Checkpoints: model weights and the EMA are full state dicts as for every strategy; the ZeRO
  optimizer state (fp32 master partitions + AdamW moments) is rank-local and travels in the
  per-rank file of the checkpoint (``rank_*.pt``), so resume needs the same world size.

DeepSpeed is imported lazily; :func:`check_deepspeed` fails with an install hint without importing it.
"""

from __future__ import annotations

import enum
import importlib.util
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from stream_r1.distributed.collectives import _active
from stream_r1.distributed.fsdp import NoShardStrategy, enable_activation_checkpointing
from stream_r1.distributed.state_dicts import load_sharded_model_state_dict, sharded_model_state_dict
from stream_r1.utils.logging import get_logger

log = get_logger(__name__)

INSTALL_HINT = "DS_BUILD_OPS=0 pip install 'stream-r1[deepspeed]'"
SUPPORTED_STAGES = (2, 3)
SUPPORTED_DTYPES = ("float32", "bfloat16")


def deepspeed_available() -> bool:
    """True when ``deepspeed`` is importable (checked without importing it)."""
    return importlib.util.find_spec("deepspeed") is not None


def check_deepspeed(zero_stage: int, param_dtype: str) -> None:
    """Validate a ``parallel.strategy=deepspeed`` config before any model is built.

    Raises:
        ValueError: DeepSpeed missing, an unsupported ZeRO stage or compute dtype.
    """
    if not deepspeed_available():
        raise ValueError(
            f"parallel.strategy=deepspeed needs the optional DeepSpeed extra: {INSTALL_HINT} "
            "(DS_BUILD_OPS=0 skips compiling CUDA ops); or use parallel.strategy=fsdp2"
        )
    if zero_stage not in SUPPORTED_STAGES:
        raise ValueError(
            f"parallel.zero_stage={zero_stage} is not supported by the deepspeed strategy (supported: "
            f"{list(SUPPORTED_STAGES)}); set --set parallel.zero_stage=2 (gradients + optimizer states) or 3 "
            "(+ parameters), or use parallel.strategy=fsdp2"
        )
    if param_dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"parallel.param_dtype={param_dtype!r} under deepspeed must be one of {list(SUPPORTED_DTYPES)}")


def _ensure_process_group() -> None:
    """DeepSpeed needs a process group even for one process: make a 1-rank one (gloo/nccl)."""
    import deepspeed

    if dist.is_initialized():
        deepspeed.init_distributed(dist_init_required=False)
        return
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    if "MASTER_PORT" not in os.environ:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)


def _check_partition(local: dict[str, Any], zero_stage: int, world_size: int) -> None:
    """A ZeRO partition state loads only into the same stage and data-parallel size.

    Raises:
        ValueError: the checkpoint was written with another ZeRO stage or world size.
    """
    saved_stage = int(local.get("zero_stage", zero_stage))
    count = local.get("partition_count", world_size)
    counts = {int(c) for c in (count if isinstance(count, list | tuple) else [count])}
    if saved_stage != zero_stage or counts != {world_size}:
        raise ValueError(
            f"checkpoint holds ZeRO-{saved_stage} optimizer partitions for {sorted(counts)} rank(s); this run is "
            f"ZeRO-{zero_stage} on {world_size}: resume a deepspeed run with its own parallel.zero_stage and "
            "number of processes"
        )


_SCALER_ATTRS = "loss_scaler_attributes"
_PLAIN = (int, float, bool, str, type(None))


def _plain_partition(state: dict[str, Any]) -> dict[str, Any]:
    """A ZeRO optimizer partition in weights-only-loadable form (tensors and plain containers).

    ZeRO puts objects in its state: the ``loss_scaler`` (kept as its plain attributes and put back
    onto the engine's own scaler on load), ``param_slice_mappings`` (``fragment_address``
    dataclasses describing this rank's slices; ZeRO recomputes them, so only their numbers are
    kept) and enums such as ``zero_stage`` (kept as their values; only compared as numbers).
    """
    out = {k: v.value if isinstance(v, enum.Enum) else v for k, v in state.items()}
    scaler = out.pop("loss_scaler", None)
    if scaler is not None:
        attrs = {k: v for k, v in vars(scaler).items() if isinstance(v, _PLAIN)}
        out[_SCALER_ATTRS] = attrs
    mappings = out.pop("param_slice_mappings", None)
    if mappings is not None:
        out["param_slice_mappings"] = [{name: {"numel": int(f.numel), "start": int(f.start)} for name, f in group.items()}
                                       for group in mappings]
    return out


@dataclass
class DeepSpeedStrategy:
    """One ZeRO engine per optimised network (generator, critic); the teacher stays replicated.

    Attributes:
        zero_stage: ZeRO stage (2: gradients + optimizer states partitioned; 3: + parameters).
        param_dtype: ``bfloat16`` turns on DeepSpeed bf16 (fp32 master partitions); else fp32.
        grad_clip_norm: ``gradient_clipping`` of every engine (must equal the loop's ``max_norm``).
        grad_accum_steps: ``gradient_accumulation_steps`` (boundaries are also set explicitly).
        micro_batch_size: ``train_micro_batch_size_per_gpu``.
    """

    zero_stage: int = 2
    param_dtype: str = "float32"
    grad_clip_norm: float = 10.0
    grad_accum_steps: int = 1
    micro_batch_size: int = 1
    name: str = "deepspeed"
    engines: dict[int, Any] = field(default_factory=dict, repr=False)

    def ds_config(self) -> dict[str, Any]:
        """The DeepSpeed config of every engine (JSON-able)."""
        return {
            "train_micro_batch_size_per_gpu": self.micro_batch_size,
            "gradient_accumulation_steps": self.grad_accum_steps,
            "gradient_clipping": self.grad_clip_norm,
            "bf16": {"enabled": self.param_dtype == "bfloat16"},
            "zero_optimization": {"stage": self.zero_stage, "overlap_comm": False, "contiguous_gradients": True},
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 2**31 - 1,
            "wall_clock_breakdown": False,
        }

    def engine(self, model: nn.Module) -> Any | None:
        """The engine built for ``model`` (None before :meth:`attach_optimizer`)."""
        return self.engines.get(id(model))

    # ---------------------------------------------------------------- wrapping
    def prepare_trainable(self, model: nn.Module, *, checkpointing: bool) -> nn.Module:
        """Activation checkpointing only; the engine is built when the optimizer is attached."""
        if checkpointing:
            enable_activation_checkpointing(model)
        return model

    def prepare_frozen(self, model: nn.Module) -> nn.Module:
        """The teacher stays a replicated plain module (ZeRO-3 inference is not used)."""
        return model

    def attach_optimizer(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """``deepspeed.initialize`` around ``model`` and the client ``optimizer``; returns the ZeRO optimizer."""
        import deepspeed

        _ensure_process_group()
        engine, ds_optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=self.ds_config())
        self.engines[id(model)] = engine
        log.info("DeepSpeed ZeRO-%d engine for %s (bf16=%s)", self.zero_stage, type(model).__name__,
                 self.param_dtype == "bfloat16")
        return ds_optimizer

    # ---------------------------------------------------------------- one window
    def set_gradient_sync(self, model: nn.Module, enabled: bool) -> None:
        """Start a micro-step: mark whether its backward ends the window, and do what ``engine.forward``
        does first (the loop calls the raw module): clear the ZeRO backward-seen flags, which advances
        ZeRO-3's micro-step counter so the next backward accumulates instead of overwriting."""
        engine = self.engine(model)
        if engine is not None:
            engine.set_gradient_accumulation_boundary(enabled)
            engine.optimizer.clear_backward_seen_flag()

    def zero_grad(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Engines clear their gradients inside ``step``; plain modules (ode-init) zero as usual."""
        if self.engine(model) is None:
            optimizer.zero_grad(set_to_none=True)

    def backward(self, model: nn.Module, loss: torch.Tensor) -> None:
        """``engine.backward`` without DeepSpeed's own ``1/gas`` scaling (the loop already divided)."""
        engine = self.engine(model)
        if engine is None:
            loss.backward()
        else:
            engine.backward(loss, scale_wrt_gas=False)

    def reduce_gradients(self, model: nn.Module) -> None:
        """Engines reduce inside backward/step; plain modules are averaged like ``none``."""
        if self.engine(model) is None:
            NoShardStrategy().reduce_gradients(model)

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> float:
        """Plain modules only; engines clip inside :meth:`optimizer_step`."""
        if self.engine(model) is not None:
            raise RuntimeError("a DeepSpeed engine clips inside step(); call optimizer_step instead")
        return NoShardStrategy().clip_grad_norm(model, max_norm)

    def optimizer_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, max_norm: float) -> float:
        """``engine.step()`` at the window boundary; returns the global grad norm before clipping."""
        engine = self.engine(model)
        if engine is None:
            return NoShardStrategy().optimizer_step(model, optimizer, max_norm)
        if max_norm != self.grad_clip_norm:
            raise ValueError(f"clip norm {max_norm} != the engine's gradient_clipping {self.grad_clip_norm}")
        engine.set_gradient_accumulation_boundary(True)
        engine.step()
        norm = engine.get_global_grad_norm()
        return float(norm) if norm is not None else 0.0

    # ---------------------------------------------------------------- checkpoints
    def model_state_dict(self, model: nn.Module) -> dict[str, Any]:
        """Full tensors on every rank (ZeRO-2 keeps whole parameters; ZeRO-3's are gathered and
        copied, since the gathered storage is released when the context exits)."""
        with self.full_parameters(model):
            state = sharded_model_state_dict(model)
            if self.zero_stage >= 3 and self.engine(model) is not None:
                state = {k: v.detach().clone() for k, v in state.items()}
        return state

    def load_model_state_dict(self, model: nn.Module, state: dict[str, Any]) -> None:
        """Every rank loaded the full tensors; under ZeRO-3 rank 0's copy is re-partitioned."""
        with self.full_parameters(model, modify=True):
            load_sharded_model_state_dict(model, state)

    def optimizer_state_dict(self, model: nn.Module,
                             optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """ZeRO state is partitioned: ``({}, this rank's partition state)``."""
        engine = self.engine(model)
        if engine is None:
            return NoShardStrategy().optimizer_state_dict(model, optimizer)
        return {"deepspeed_zero_stage": self.zero_stage}, _plain_partition(engine.optimizer.state_dict())

    def load_optimizer_state_dict(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                                  state: dict[str, Any], local: dict[str, Any] | None) -> None:
        """Restore this rank's partition (moments and fp32 masters, bitwise)."""
        engine = self.engine(model)
        if engine is None:
            NoShardStrategy().load_optimizer_state_dict(model, optimizer, state, local)
            return
        if local is None:
            raise ValueError(
                "this checkpoint has no DeepSpeed optimizer partition for this rank (written by another strategy "
                "or world size); resume with the run's own parallel.strategy and number of processes"
            )
        world = dist.get_world_size() if _active() else 1
        _check_partition(local, self.zero_stage, world)
        states: list[dict[str, Any] | None] = [None] * world
        part = {k: v for k, v in local.items() if k != _SCALER_ATTRS}
        if _SCALER_ATTRS in local:  # the engine's own scaler object, with the saved scale
            vars(engine.optimizer.loss_scaler).update(local[_SCALER_ATTRS])
            part["loss_scaler"] = engine.optimizer.loss_scaler
        states[dist.get_rank() if _active() else 0] = part
        engine.optimizer.load_state_dict(states, load_optimizer_states=True, load_from_fp32_weights=True)

    def full_parameters(self, model: nn.Module, *, modify: bool = False) -> AbstractContextManager[None]:
        """ZeRO-3: ``deepspeed.zero.GatheredParameters`` (rank 0 modifies when ``modify``); else a no-op."""
        if self.zero_stage < 3 or self.engine(model) is None:
            return nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=0 if modify else None)
