"""The recipe's batch arithmetic at any world size (torch-free: the pipeline validates with it).

A recipe is written for a reference world size ``R = train.global_batch_size /
train.batch_size_per_rank`` (8 GPUs for the 1.3B recipe) and fixes the *effective* batch, the
prompts behind one optimizer step: ``E = train.global_batch_size * train.grad_accum_steps``
(8 x 8 = 64). At world size ``W`` each rank keeps its micro-batch (memory decides it) and the
accumulation absorbs the difference: ``accum(W) = E / (batch_size_per_rank * W)``, so 1, 2 or 4
nodes of 8 GPUs take the same optimizer steps over the same number of prompts (accumulation
8, 4, 2). Raw-step counts of the schedule scale with the accumulation: the EMA shadow starts
after the same number of prompts (``ema_start_raw_step`` is given at the reference world size).
"""

from __future__ import annotations

from dataclasses import dataclass

from stream_r1.config.schema import TrainConfig


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """How one optimizer step's prompts are split at a world size.

    Attributes:
        world_size: Number of ranks.
        batch_size_per_rank: Prompts per rank per micro-step.
        grad_accum_steps: Micro-steps per optimizer step at this world size.
        micro_batch: Prompts per micro-step over all ranks (``batch_size_per_rank * world_size``).
        effective_batch: Prompts per optimizer step (the same at every world size).
        ema_start_raw_step: ``train.ema_start_raw_step`` rescaled to this accumulation.
    """

    world_size: int
    batch_size_per_rank: int
    grad_accum_steps: int
    micro_batch: int
    effective_batch: int
    ema_start_raw_step: int


def effective_batch(train: TrainConfig) -> int:
    """Prompts per optimizer step of the recipe (``global_batch_size * grad_accum_steps``)."""
    return train.global_batch_size * train.grad_accum_steps


def splittable_world_sizes(train: TrainConfig, limit: int = 1024) -> list[int]:
    """World sizes ``<= limit`` that can split the recipe's effective batch."""
    e, b = effective_batch(train), train.batch_size_per_rank
    return [w for w in range(1, limit + 1) if e % (b * w) == 0]


def plan_batch(train: TrainConfig, world_size: int) -> BatchPlan:
    """The batch split of ``train`` at ``world_size`` ranks.

    Args:
        train: The recipe's ``train`` section.
        world_size: Ranks of the job (``num_nodes * gpus_per_node``).

    Returns:
        The :class:`BatchPlan` (``grad_accum_steps == train.grad_accum_steps`` at the reference size).

    Raises:
        ValueError: ``world_size`` cannot split the effective batch into whole micro-steps; the
            message names the values and the world sizes that work.
    """
    if world_size < 1:
        raise ValueError(f"world size {world_size} must be >= 1")
    e, b = effective_batch(train), train.batch_size_per_rank
    per_micro = b * world_size
    if e % per_micro:
        ok = ", ".join(str(w) for w in splittable_world_sizes(train, limit=max(e // b, 1)))
        raise ValueError(
            f"world size {world_size} cannot split the recipe's batch: {e} prompts per optimizer step "
            f"(train.global_batch_size={train.global_batch_size} x train.grad_accum_steps={train.grad_accum_steps}) "
            f"is not a multiple of train.batch_size_per_rank={b} x {world_size} ranks; use a world size in "
            f"[{ok}] or change train.batch_size_per_rank"
        )
    accum = e // per_micro
    # Same number of prompts seen before the EMA starts; rounded up to a whole micro-step.
    ema_start = -(-train.ema_start_raw_step * accum // train.grad_accum_steps)
    return BatchPlan(world_size, b, accum, per_micro, e, ema_start)
