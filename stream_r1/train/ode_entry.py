"""Runners of ``stream-r1 ode-pairs`` and ``stream-r1 ode-init`` (docs/method.md §1.9)."""

from __future__ import annotations

from pathlib import Path

import torch

from stream_r1.config import config_hash, write_resolved_config
from stream_r1.config.derived import checkpoint_path
from stream_r1.config.schema import RunConfig
from stream_r1.distributed.collectives import barrier
from stream_r1.distributed.env import init_distributed, shutdown_distributed, world_size_from_env
from stream_r1.distributed.fsdp import make_strategy
from stream_r1.distributed.state_dicts import (
    full_model_state_dict,
    full_optimizer_state_dict,
    load_full_model_state_dict,
    load_full_optimizer_state_dict,
)
from stream_r1.method import metric_keys as mk
from stream_r1.method.build import (
    load_score_transformer,
    load_student_transformer,
    student_denoiser,
    trajectory_teacher,
)
from stream_r1.train.build import build_text_pipeline, master_dtype
from stream_r1.train.checkpoint import (
    CheckpointPayload,
    find_resume_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_trainer_state,
    save_checkpoint,
    verify_checkpoint,
)
from stream_r1.train.data import PromptSampler, read_prompts
from stream_r1.train.export import write_reference_pt
from stream_r1.train.metrics import JsonlSink, MultiSink, NullSink, TensorBoardSink
from stream_r1.train.ode_pairs import OdePairs, generate_pairs, plan_shards, write_index
from stream_r1.train.ode_regression import regression_inputs, regression_loss
from stream_r1.train.optim import build_adamw
from stream_r1.utils.dtypes import torch_dtype
from stream_r1.utils.logging import get_logger
from stream_r1.utils.progress import progress
from stream_r1.utils.seeding import make_rng

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

    Checkpoints (``output/checkpoints``) every ``train.checkpoint_every_steps`` regression steps,
    keeping ``train.keep_last_checkpoints``; ``resume="auto"`` continues from the newest valid one.

    Returns:
        The per-step regression losses of this rank (from the resumed step on).
    """
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
        p = cfg.parallel
        strategy = make_strategy(p.strategy, param_dtype=p.param_dtype, reduce_dtype=p.reduce_dtype,
                                 reshard_after_forward=p.reshard_after_forward)
        net = load_student_transformer(cfg, None, use_ema=False, dtype=master_dtype(cfg), device=world.device)
        net = strategy.prepare_trainable(net.train(), checkpointing=cfg.model.gradient_checkpointing)
        student = student_denoiser(cfg, net)
        opt = build_adamw(net, cfg.ode.lr, cfg.optim)
        sampler = PromptSampler(len(pairs), world.world_size, world.rank, bs, cfg.train.seed, cfg.data.shuffle)
        cache, _ = build_text_pipeline(cfg, out / "text_cache", world.device)
        compute = torch_dtype(cfg.model.dtype)
        start = 0
        if resume_from is not None:
            ck = load_checkpoint(resume_from, world.rank)
            load_full_model_state_dict(net, ck.models.get("generator", {}))
            load_full_optimizer_state_dict(net, opt, ck.optimizers.get("generator", {}))
            sampler.load_state_dict(ck.state["sampler"])
            start = int(ck.state["optimizer_step"])
            log.info("ode-init resumed from %s at step %d", resume_from, start)
        tb, resume_step = out / "tensorboard", (start if resume_from is not None else None)
        sink = (MultiSink(TensorBoardSink(tb, resume_step), JsonlSink(tb / "metrics.jsonl", resume_step))
                if world.is_main else NullSink())
        losses = []
        for step in progress(range(start, cfg.ode.num_steps), desc="ode-init (steps)",
                             total=cfg.ode.num_steps - start, enabled=None if world.is_main else False):
            items = [pairs[i] for i in sampler.next_indices()]
            states = torch.stack([s for _, s in items]).to(world.device, compute)
            emb = cache.get([pr for pr, _ in items]).to(world.device, compute)
            rng = make_rng(cfg.train.seed, "ode-index", world.rank, step)
            x_t, t, target = regression_inputs(states, pairs.timesteps, cfg.model.frames_per_block, rng)
            opt.zero_grad(set_to_none=True)
            loss = regression_loss(student, x_t, t, emb, target)
            loss.backward()
            strategy.reduce_gradients(net)
            norm = strategy.clip_grad_norm(net, cfg.optim.grad_clip_norm)
            opt.step()
            losses.append(float(loss.detach()))
            sink.scalars(step + 1, {mk.LOSS_ODE_REGRESSION: losses[-1], mk.GRAD_NORM_GENERATOR: norm})
            if (step + 1) % cfg.train.checkpoint_every_steps == 0 and step + 1 < cfg.ode.num_steps:
                payload = CheckpointPayload(
                    models={"generator": full_model_state_dict(net)},
                    optimizers={"generator": full_optimizer_state_dict(net, opt)},
                    state={"optimizer_step": step + 1, "config_hash": config_hash(cfg), "sampler": sampler.state_dict()},
                )
                save_checkpoint(out, step + 1, payload, rank=world.rank, keep_last=cfg.train.keep_last_checkpoints)
        state = full_model_state_dict(net)
        if world.is_main:
            write_reference_pt(out / "ode_init.pt", state, None)
            log.info("wrote %s", out / "ode_init.pt")
        sink.close()
        barrier()
        return losses
    finally:
        shutdown_distributed()
