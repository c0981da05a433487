"""Runners of ``stream-r1 ode-pairs`` and ``stream-r1 ode-init`` (docs/method.md §1.9)."""

from __future__ import annotations

from pathlib import Path

from stream_r1.config import config_hash, write_resolved_config
from stream_r1.config.derived import checkpoint_path
from stream_r1.config.schema import RunConfig
from stream_r1.distributed.collectives import barrier
from stream_r1.distributed.env import init_distributed, shutdown_distributed, world_size_from_env
from stream_r1.method import metric_keys as mk
from stream_r1.method.build import (
    load_score_transformer,
    trajectory_teacher,
)
from stream_r1.train.build import build_text_pipeline
from stream_r1.train.checkpoint import (
    find_resume_checkpoint,
    list_checkpoints,
    read_trainer_state,
    verify_checkpoint,
)
from stream_r1.train.data import read_prompts
from stream_r1.train.ode_pairs import OdePairs, generate_pairs, plan_shards, write_index
from stream_r1.utils.dtypes import torch_dtype
from stream_r1.utils.logging import get_logger

log = get_logger(__name__)


def _require(cfg: RunConfig, names: tuple[str, ...]) -> None:
    missing = [f"checkpoints.{n}={str(checkpoint_path(cfg, n))!r}" for n in names
               if not checkpoint_path(cfg, n).exists()]
    if missing:
        raise FileNotFoundError(f"missing weights: {', '.join(missing)}; set checkpoints.root or the paths with --set")


def run_ode_pairs(cfg: RunConfig, output_dir: str | Path, prompts_file: str | None = None,
                  teacher: str = "base") -> Path:
    """Generate (or complete) an ODE-pairs directory; returns its ``index.json``.

    Args:
        cfg: Run config (``ode`` and ``rollout`` sections; ``train.seed``).
        output_dir: Pairs directory (resumable).
        prompts_file: Prompt file (default ``data.prompts``).
        teacher: ``base`` (the 1.3B, as the reference ODE stage) or ``teacher`` (``checkpoints.teacher``).
    """
    if teacher not in ("base", "teacher"):
        raise ValueError(f"--teacher {teacher!r} must be 'base' or 'teacher'")
    prompts = read_prompts(prompts_file or cfg.data.prompts)
    _require(cfg, (teacher, "text_encoder", "tokenizer"))
    out = Path(output_dir)
    world = init_distributed()
    try:
        if world.is_main:
            write_resolved_config(cfg, out)
        dtype = torch_dtype(cfg.model.dtype)
        net = load_score_transformer(cfg, teacher, dtype=dtype, device=world.device)
        net.requires_grad_(False)
        den = trajectory_teacher(cfg, net)
        cache, negative = build_text_pipeline(cfg, out / "text_cache", world.device)
        generate_pairs(den, prompts, cache.get, negative.get(), out, cfg.ode, cfg.rollout, seed=cfg.train.seed,
                       rank=world.rank, world_size=world.world_size, device=world.device, dtype=dtype)
        barrier()
        r = cfg.rollout
        shape = [len(cfg.ode.stored_indices), r.num_frames, r.latent_channels, r.latent_height, r.latent_width]
        index = out / "index.json"
        if world.is_main:
            write_index(out, prompts, plan_shards(len(prompts), cfg.ode.prompts_per_shard), shape, cfg.ode,
                        config_hash(cfg))
        barrier()
        return index
    finally:
        shutdown_distributed()


def _ode_resume_point(cfg: RunConfig, out: Path, resume: str | None) -> Path | None:
    """Checkpoint to continue from (same rules as training: explicit ``--resume``, matching config)."""
    if resume is None:
        if list_checkpoints(out):
            raise ValueError(f"--output {str(out)!r} already holds ode-init checkpoints; pass --resume auto "
                             "to continue or choose another --output")
        return None
    path = find_resume_checkpoint(out) if resume == "auto" else Path(resume)
    if path is None:
        return None
    verify_checkpoint(path)
    if read_trainer_state(path).get("config_hash") != config_hash(cfg):
        raise ValueError(f"checkpoint {path} was written by a different config; use that config or another --output")
    return path


def run_ode_init(cfg: RunConfig, pairs_dir: str | Path, output_dir: str | Path, resume: str | None = None) -> list[float]:
    """Regress the student (from ``checkpoints.base``) on ODE pairs; writes ``output/ode_init.pt``.

    Runs the training loop in ODE mode (``stream_r1.train.trainer.Trainer`` with an
    :class:`~stream_r1.train.ode_regression.OdeObjective`): the same strategy (FSDP2/DeepSpeed),
    checkpoints (``output/checkpoints`` every ``train.checkpoint_every_steps`` steps and at the end,
    keeping ``train.keep_last_checkpoints``) and metrics (``loss/ode_regression``) as distillation;
    ``resume="auto"`` continues from the newest valid checkpoint.

    Returns:
        The per-step regression losses of this rank (from the resumed step on).
    """
    from stream_r1.train.build import build_ode_training, make_run_strategy
    from stream_r1.train.trainer import Trainer, TrainerOptions

    pairs = OdePairs(pairs_dir)
    _require(cfg, ("base", "text_encoder", "tokenizer"))
    resume_from = _ode_resume_point(cfg, Path(output_dir), resume)
    world_size = world_size_from_env()
    bs = cfg.ode.batch_size_per_rank
    if len(pairs) < bs * world_size:
        raise ValueError(f"{len(pairs)} ODE pairs cannot fill ode.batch_size_per_rank={bs} on {world_size} ranks")
    out = Path(output_dir)
    world = init_distributed()
    try:
        if world.is_main:
            write_resolved_config(cfg, out)
        strategy = make_run_strategy(cfg, grad_accum_steps=1, micro_batch_size=bs)
        setup = build_ode_training(cfg, world, strategy, pairs, out)
        trainer = Trainer(cfg, setup, world, strategy, TrainerOptions(out, resume_from))
        if resume_from is not None:
            log.info("ode-init resumed from %s at step %d", resume_from, trainer.steps_done)
        history = trainer.run()
        barrier()
        return [row[mk.LOSS_ODE_REGRESSION] for row in history]
    finally:
        shutdown_distributed()
