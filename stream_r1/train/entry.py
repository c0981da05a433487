"""``run_training``: preflight, process group, build, train, export (what ``stream-r1 train`` calls)."""

from __future__ import annotations

from pathlib import Path

import torch

from stream_r1.config import write_resolved_config
from stream_r1.config.schema import RunConfig
from stream_r1.distributed.batch import plan_batch
from stream_r1.distributed.collectives import barrier
from stream_r1.distributed.env import init_distributed, shutdown_distributed, world_size_from_env
from stream_r1.train.preflight import preflight
from stream_r1.train.run_identity import write_identity
from stream_r1.utils.logging import get_logger

log = get_logger(__name__)


def run_training(
    cfg: RunConfig,
    output_dir: str | Path,
    resume: str | None = None,
    *,
    sigkill_after_checkpoint: int | None = None,
    sigkill_during_checkpoint: int | None = None,
) -> list[dict[str, float]]:
    """Train a run end to end.

    Args:
        cfg: The run config.
        output_dir: Run directory (config.yaml, checkpoints/, tensorboard/, final/).
        resume: None (fresh; refuses a directory with checkpoints), ``"auto"`` or a checkpoint dir.
        sigkill_after_checkpoint: Testing: SIGKILL after publishing this optimizer step's checkpoint.
        sigkill_during_checkpoint: Testing: SIGKILL while writing this optimizer step's checkpoint.

    Returns:
        The scalars logged at each optimizer step of this process (rank 0's view on rank 0).

    Raises:
        ValueError, FileNotFoundError: bad input, before any model is built.
    """
    from stream_r1.train.build import build_training, make_run_strategy
    from stream_r1.train.trainer import Trainer, TrainerOptions

    output_dir = Path(output_dir)
    plan = preflight(cfg, output_dir, resume, world_size_from_env())
    world = init_distributed()
    try:
        if cfg.train.allow_tf32 and torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if world.is_main:
            output_dir.mkdir(parents=True, exist_ok=True)
            write_resolved_config(cfg, output_dir)
            write_identity(output_dir, plan.identity)
        barrier()
        strategy = make_run_strategy(cfg, grad_accum_steps=plan_batch(cfg.train, world.world_size).grad_accum_steps,
                                     micro_batch_size=cfg.train.batch_size_per_rank)
        setup = build_training(cfg, world, strategy, output_dir)
        options = TrainerOptions(output_dir, plan.checkpoint, sigkill_after_checkpoint, sigkill_during_checkpoint,
                                 trajectory_hash=plan.trajectory_hash)
        trainer = Trainer(cfg, setup, world, strategy, options)
        log.info("training from optimizer step %d to %d", trainer.steps_done, cfg.train.num_optimizer_steps)
        return trainer.run()
    finally:
        shutdown_distributed()
