"""Build the networks, the distiller and the data pipeline of a training run from its config.

Order follows torchtitan (the order torchtitan uses): load single-device models, then apply the
parallel strategy (activation checkpointing, then FSDP2 per block) from outside.
Masters are fp32 under FSDP2 (``parallel.param_dtype`` is the compute dtype, docs/method.md §1.7);
without sharding the networks are kept in ``model.dtype``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from stream_r1.config.derived import checkpoint_path
from stream_r1.config.schema import RunConfig
from stream_r1.distributed.collectives import all_reduce_mean
from stream_r1.distributed.env import WorldInfo
from stream_r1.distributed.fsdp import Strategy, make_strategy
from stream_r1.method.build import (
    build_distiller,
    load_reward_parts,
    load_score_transformer,
    load_student_transformer,
    student_denoiser,
    student_init_checkpoint,
)
from stream_r1.method.distiller import DistillBatch, StreamR1Distiller
from stream_r1.method.guidance import NegativePromptEmbedding
from stream_r1.models.text_encoder import TextEncoder
from stream_r1.train.data import PromptSampler, TextEmbeddingCache, read_prompts
from stream_r1.train.ode_pairs import OdePairs
from stream_r1.train.ode_regression import OdeObjective
from stream_r1.utils.dtypes import torch_dtype
from stream_r1.utils.logging import get_logger

log = get_logger(__name__)

@dataclass
class TrainingSetup:
    """Everything the training loop touches (distillation, or ODE initialisation when ``ode`` is set).

    Attributes:
        generator: The student transformer (optimised; possibly FSDP2-sharded).
        critic: The fake-score transformer (optimised); None in ODE mode.
        distiller: Losses over the three networks; None in ODE mode.
        sampler: This rank's sampler (prompt indices; ODE-pair indices in ODE mode).
        prompts: All prompts (empty in ODE mode: the pairs carry theirs).
        make_batch: ``prompts -> DistillBatch`` (cached text embeddings + negative prompt); None in ODE mode.
        ode: The ODE-regression objective (ODE mode), else None.
    """

    generator: nn.Module
    critic: nn.Module | None
    distiller: StreamR1Distiller | None
    sampler: PromptSampler
    prompts: list[str]
    make_batch: Callable[[list[str]], DistillBatch] | None
    ode: OdeObjective | None = None


def make_run_strategy(cfg: RunConfig, *, grad_accum_steps: int, micro_batch_size: int) -> Strategy:
    """The ``parallel.*`` strategy of a run (training and ODE initialisation alike)."""
    p = cfg.parallel
    return make_strategy(p.strategy, param_dtype=p.param_dtype, reduce_dtype=p.reduce_dtype,
                         reshard_after_forward=p.reshard_after_forward, zero_stage=p.zero_stage,
                         grad_clip_norm=cfg.optim.grad_clip_norm, grad_accum_steps=grad_accum_steps,
                         micro_batch_size=micro_batch_size, shard_size=p.shard_size)


def master_dtype(cfg: RunConfig) -> torch.dtype:
    """fp32 masters under FSDP2; ``model.dtype`` for unsharded runs."""
    return torch.float32 if cfg.parallel.strategy == "fsdp2" else torch_dtype(cfg.model.dtype)


def encoder_identity(cfg: RunConfig) -> str:
    """A string that changes with the text encoder, tokenizer or token length (embedding-cache key)."""
    h = hashlib.sha256()
    for name in ("text_encoder", "tokenizer"):
        d = checkpoint_path(cfg, name)
        h.update(str(d.resolve()).encode())
        for f in sorted(d.glob("*.json")):
            h.update(f.name.encode() + f.read_bytes())
        for f in sorted(d.glob("*.safetensors")) + sorted(d.glob("*.bin")):
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    h.update(f"len={cfg.model.text_len_tokens}".encode())
    return h.hexdigest()


def build_text_pipeline(
    cfg: RunConfig, cache_dir: Path, device: torch.device
) -> tuple[TextEmbeddingCache, NegativePromptEmbedding]:
    """Embedding cache + cached negative prompt; the encoder is loaded only on a cache miss."""
    holder: dict[str, TextEncoder] = {}

    def encode(prompts: list[str]) -> torch.Tensor:
        if "enc" not in holder:
            log.info("loading text encoder (cache miss)")
            holder["enc"] = TextEncoder.from_pretrained(
                checkpoint_path(cfg, "text_encoder"),
                checkpoint_path(cfg, "tokenizer"),
                cfg.model.text_len_tokens,
                dtype=torch.float32 if device.type == "cpu" else torch.bfloat16,
                device=device,
            )
        return holder["enc"].encode(prompts).float().cpu()

    cache = TextEmbeddingCache(cache_dir, encoder_identity(cfg), encode)
    negative = NegativePromptEmbedding(cfg.dmd.negative_prompt, cache.get)
    return cache, negative


def _all_reduce_rewards(rewards: dict[str, float]) -> dict[str, float]:
    """Rank-mean of per-axis rewards (``reward.balance_sync: all_reduce``)."""
    keys = sorted(rewards)
    mean = all_reduce_mean(torch.tensor([rewards[k] for k in keys], dtype=torch.float64))
    return dict(zip(keys, mean.tolist()))


def build_training(cfg: RunConfig, world: WorldInfo, strategy: Strategy, output_dir: Path) -> TrainingSetup:
    """Load and wrap every network and build the data pipeline (all ranks call this)."""
    device = world.device
    dtype = master_dtype(cfg)
    generator = load_student_transformer(cfg, student_init_checkpoint(cfg), use_ema=False, dtype=dtype, device=device)
    critic = load_score_transformer(cfg, "base", dtype=dtype, device=device)
    teacher = load_score_transformer(cfg, "teacher", dtype=dtype, device=device)
    teacher.requires_grad_(False)
    for net in (generator, critic):
        net.requires_grad_(True)
        net.train()
    ckpt = cfg.model.gradient_checkpointing
    generator = strategy.prepare_trainable(generator, checkpointing=ckpt)
    critic = strategy.prepare_trainable(critic, checkpointing=ckpt)
    teacher = strategy.prepare_frozen(teacher) if cfg.parallel.shard_teacher else teacher
    compute = torch_dtype(cfg.model.dtype)
    vae, reward = load_reward_parts(cfg, dtype=compute, device=device)
    distiller = build_distiller(cfg, generator, critic, teacher, vae=vae, reward_model=reward,
                                all_reduce=_all_reduce_rewards)
    prompts = read_prompts(cfg.data.prompts)
    sampler = PromptSampler(
        len(prompts), world.world_size, world.rank, cfg.train.batch_size_per_rank, cfg.train.seed, cfg.data.shuffle
    )
    cache_dir = Path(cfg.data.embedding_cache) if cfg.data.embedding_cache else output_dir / "text_cache"
    cache, negative = build_text_pipeline(cfg, cache_dir, device)

    def make_batch(batch_prompts: list[str]) -> DistillBatch:
        emb = cache.get(batch_prompts).to(device=device, dtype=compute)
        return DistillBatch(batch_prompts, emb, negative.get().to(device=device, dtype=compute))

    return TrainingSetup(generator, critic, distiller, sampler, prompts, make_batch)


def build_ode_training(
    cfg: RunConfig, world: WorldInfo, strategy: Strategy, pairs: OdePairs, output_dir: Path
) -> TrainingSetup:
    """The ODE-initialisation setup: the student from ``checkpoints.base`` regressed on ``pairs``."""
    device = world.device
    net = load_student_transformer(cfg, None, use_ema=False, dtype=master_dtype(cfg), device=device)
    net.requires_grad_(True)
    net = strategy.prepare_trainable(net.train(), checkpointing=cfg.model.gradient_checkpointing)
    sampler = PromptSampler(len(pairs), world.world_size, world.rank, cfg.ode.batch_size_per_rank, cfg.train.seed,
                            cfg.data.shuffle)
    cache, _ = build_text_pipeline(cfg, output_dir / "text_cache", device)
    objective = OdeObjective(student_denoiser(cfg, net), pairs, cache.get, device, torch_dtype(cfg.model.dtype))
    return TrainingSetup(net, None, None, sampler, [], None, ode=objective)
