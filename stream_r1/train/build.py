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

from stream_r1.config.schema import RunConfig
from stream_r1.distributed.collectives import all_reduce_mean
from stream_r1.distributed.env import WorldInfo
from stream_r1.distributed.fsdp import Strategy
from stream_r1.method.distiller import DistillBatch, StreamR1Distiller
from stream_r1.method.guidance import NegativePromptEmbedding
from stream_r1.models.denoiser import BidirectionalDenoiser, CausalDenoiser
from stream_r1.models.loading import load_student, load_wan_transformer
from stream_r1.models.text_encoder import TextEncoder
from stream_r1.models.vae import WanVAE
from stream_r1.train.data import PromptSampler, TextEmbeddingCache, read_prompts
from stream_r1.train.preflight import resolve_checkpoint_path
from stream_r1.utils.logging import get_logger

log = get_logger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class TrainingSetup:
    """Everything the training loop touches.

    Attributes:
        generator: The student transformer (optimised; possibly FSDP2-sharded).
        critic: The fake-score transformer (optimised).
        distiller: Losses over the three networks.
        sampler: This rank's prompt sampler.
        prompts: All prompts.
        make_batch: ``prompts -> DistillBatch`` (cached text embeddings + negative prompt).
        vae: The VAE when loaded (reward runs), for TensorBoard clips.
    """

    generator: nn.Module
    critic: nn.Module
    distiller: StreamR1Distiller
    sampler: PromptSampler
    prompts: list[str]
    make_batch: Callable[[list[str]], DistillBatch]
    vae: WanVAE | None


def master_dtype(cfg: RunConfig) -> torch.dtype:
    """fp32 masters under FSDP2; ``model.dtype`` for unsharded runs."""
    return torch.float32 if cfg.parallel.strategy == "fsdp2" else DTYPES[cfg.model.dtype]


def encoder_identity(cfg: RunConfig) -> str:
    """A string that changes with the text encoder, tokenizer or token length (embedding-cache key)."""
    h = hashlib.sha256()
    for name in ("text_encoder", "tokenizer"):
        d = resolve_checkpoint_path(cfg, name)
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
                resolve_checkpoint_path(cfg, "text_encoder"),
                resolve_checkpoint_path(cfg, "tokenizer"),
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


def _reward_parts(cfg: RunConfig, device: torch.device) -> tuple[WanVAE | None, object | None, object | None]:
    if not cfg.reward.enabled:
        return None, None, None
    from stream_r1.reward.model import VideoRewardModel
    from stream_r1.reward.weighting import RewardBalancer

    compute = DTYPES[cfg.model.dtype]
    vae = WanVAE.from_pretrained(resolve_checkpoint_path(cfg, "vae"), dtype=compute, device=device)
    reward = VideoRewardModel.from_checkpoint(resolve_checkpoint_path(cfg, "reward"), dtype=compute, device=device)
    balancer = None
    if cfg.reward.mode == "BalancedOverall":
        r = cfg.reward
        sync = _all_reduce_rewards if r.balance_sync == "all_reduce" else None
        balancer = RewardBalancer(r.balance_window, r.balance_warmup, r.balance_lambda, axes=tuple(r.dims), all_reduce=sync)
    return vae, reward, balancer


def build_training(cfg: RunConfig, world: WorldInfo, strategy: Strategy, output_dir: Path) -> TrainingSetup:
    """Load and wrap every network and build the data pipeline (all ranks call this)."""
    device = world.device
    dtype = master_dtype(cfg)
    init = resolve_checkpoint_path(cfg, "student_init") if cfg.checkpoints.student_init else None
    generator = load_student(resolve_checkpoint_path(cfg, "base"), init, use_ema=False, dtype=dtype).to(device)
    critic = load_wan_transformer(resolve_checkpoint_path(cfg, "base"), causal=False, dtype=dtype).to(device)
    teacher = load_wan_transformer(resolve_checkpoint_path(cfg, "teacher"), causal=False, dtype=dtype).to(device)
    teacher.requires_grad_(False)
    for net in (generator, critic):
        net.requires_grad_(True)
        net.train()
    ckpt = cfg.model.gradient_checkpointing
    generator = strategy.prepare_trainable(generator, checkpointing=ckpt)
    critic = strategy.prepare_trainable(critic, checkpointing=ckpt)
    teacher = strategy.prepare_frozen(teacher) if cfg.parallel.shard_teacher else teacher
    m = cfg.model
    student = CausalDenoiser(
        generator,  # type: ignore[arg-type]
        shift=cfg.rollout.student_sigma_shift,
        frames_per_block=m.frames_per_block,
        local_attn_frames=m.local_attn_frames,
        sink_frames=m.sink_frames,
        sink_ema_alpha=m.sink_ema_alpha,
        attention_backend=m.attention_backend,
    )
    vae, reward, balancer = _reward_parts(cfg, device)
    distiller = StreamR1Distiller(
        student,
        # The score wrappers convert flow -> x0 on their own (shift 8) table, as Self-Forcing's do (§1.2).
        BidirectionalDenoiser(critic, shift=cfg.dmd.score_sigma_shift),  # type: ignore[arg-type]
        BidirectionalDenoiser(teacher, shift=cfg.dmd.score_sigma_shift),  # type: ignore[arg-type]
        model_cfg=m,
        rollout_cfg=cfg.rollout,
        dmd_cfg=cfg.dmd,
        reward_cfg=cfg.reward,
        vae=vae,
        reward_model=reward,  # type: ignore[arg-type]
        balancer=balancer,  # type: ignore[arg-type]
    )
    prompts = read_prompts(cfg.data.prompts)
    sampler = PromptSampler(
        len(prompts), world.world_size, world.rank, cfg.train.batch_size_per_rank, cfg.train.seed, cfg.data.shuffle
    )
    cache_dir = Path(cfg.data.embedding_cache) if cfg.data.embedding_cache else output_dir / "text_cache"
    cache, negative = build_text_pipeline(cfg, cache_dir, device)
    compute = DTYPES[cfg.model.dtype]

    def make_batch(batch_prompts: list[str]) -> DistillBatch:
        emb = cache.get(batch_prompts).to(device=device, dtype=compute)
        return DistillBatch(batch_prompts, emb, negative.get().to(device=device, dtype=compute))

    return TrainingSetup(generator, critic, distiller, sampler, prompts, make_batch, vae)
