"""The composition root: every network wrapper, the balancer and the distiller, built from a run config.

Training (``stream_r1.train.build``), ODE initialisation (``stream_r1.train.ode_entry``), generation
(``stream_r1.sample``), evaluation (through generation) and the benchmarks construct these objects only
here, so a config value means the same thing everywhere. Rules that couple config fields (a sink needs
a window, frame counts are whole chunks, ...) are checked when the config loads
(``stream_r1.config.schema``), before anything here runs.

Loading weights is separate from wrapping them: training shards and checkpoints the bare transformers
through its strategy between the two steps.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from stream_r1.config.derived import checkpoint_path
from stream_r1.config.schema import RewardConfig, RunConfig
from stream_r1.method.distiller import StreamR1Distiller
from stream_r1.models.denoiser import BidirectionalDenoiser, CausalDenoiser
from stream_r1.models.loading import load_student, load_wan_transformer
from stream_r1.models.vae import WanVAE
from stream_r1.reward.model import VideoRewardModel
from stream_r1.reward.weighting import AllReduceMean, RewardBalancer


def load_student_transformer(
    cfg: RunConfig, checkpoint: str | Path | None, *, use_ema: bool, dtype: torch.dtype, device: torch.device | str
) -> nn.Module:
    """The causal student transformer: ``checkpoints.base`` architecture, weights from ``checkpoint``.

    Args:
        cfg: run config (``checkpoints.base``).
        checkpoint: generator ``.pt``/``.safetensors`` or a transformer directory; None = the base weights.
        use_ema: take ``generator_ema`` from a nested checkpoint.
        dtype: parameter dtype.
        device: where the parameters go.
    """
    return load_student(checkpoint_path(cfg, "base"), checkpoint, use_ema=use_ema, dtype=dtype).to(device)


def student_init_checkpoint(cfg: RunConfig) -> Path | None:
    """``checkpoints.student_init`` resolved, or None when it is empty (start from the base weights)."""
    return checkpoint_path(cfg, "student_init") if cfg.checkpoints.student_init else None


def load_score_transformer(cfg: RunConfig, name: str, *, dtype: torch.dtype, device: torch.device | str) -> nn.Module:
    """A bidirectional Wan transformer from ``checkpoints.<name>`` (``teacher``, or ``base`` for the critic)."""
    return load_wan_transformer(checkpoint_path(cfg, name), causal=False, dtype=dtype).to(device)


def student_denoiser(cfg: RunConfig, transformer: nn.Module) -> CausalDenoiser:
    """The student as an x0 predictor with the config's chunking, window, sink and attention kernel.

    Args:
        cfg: run config (``model.*``, ``rollout.student_sigma_shift``).
        transformer: a ``CausalWanTransformer`` (possibly wrapped in place by FSDP2 / checkpointing).
    """
    m = cfg.model
    return CausalDenoiser(
        transformer,  # type: ignore[arg-type]
        shift=cfg.rollout.student_sigma_shift,
        frames_per_block=m.frames_per_block,
        local_attn_frames=m.local_attn_frames,
        sink_frames=m.sink_frames,
        sink_ema_alpha=m.sink_ema_alpha,
        attention_backend=m.attention_backend,
    )


def score_denoiser(cfg: RunConfig, transformer: nn.Module) -> BidirectionalDenoiser:
    """A DMD score (teacher or critic): flow -> x0 on its own ``dmd.score_sigma_shift`` table (8), as
    Self-Forcing's ``WanDiffusionWrapper`` does; noising uses the student's table (``docs/method.md``)."""
    return BidirectionalDenoiser(transformer, shift=cfg.dmd.score_sigma_shift)  # type: ignore[arg-type]


def trajectory_teacher(cfg: RunConfig, transformer: nn.Module) -> BidirectionalDenoiser:
    """The ODE-pairs teacher: x0 on the Euler sampler's ``ode.sampler_sigma_shift`` table."""
    return BidirectionalDenoiser(transformer, shift=cfg.ode.sampler_sigma_shift)  # type: ignore[arg-type]


def build_balancer(r: RewardConfig, all_reduce: AllReduceMean | None = None) -> RewardBalancer | None:
    """Adaptive Reward Balancing state for ``reward.mode: BalancedOverall`` (None for every other mode).

    Args:
        r: the ``reward`` section (``balance_*``, ``dims``).
        all_reduce: rank-mean of per-axis rewards; used only with ``reward.balance_sync: all_reduce``.

    Raises:
        ValueError: ``balance_sync: all_reduce`` without a hook.
    """
    if r.mode != "BalancedOverall":
        return None
    hook = None
    if r.balance_sync == "all_reduce":
        if all_reduce is None:
            raise ValueError("reward.balance_sync=all_reduce needs an all_reduce hook (stream_r1.distributed)")
        hook = all_reduce
    return RewardBalancer(r.balance_window, r.balance_warmup, r.balance_lambda, axes=tuple(r.dims), all_reduce=hook)


def load_reward_parts(
    cfg: RunConfig, *, dtype: torch.dtype, device: torch.device | str
) -> tuple[WanVAE | None, VideoRewardModel | None]:
    """VAE and VideoReward for a reward mode (``(None, None)`` for ``reward.mode: none``)."""
    if not cfg.reward.enabled:
        return None, None
    vae = WanVAE.from_pretrained(checkpoint_path(cfg, "vae"), dtype=dtype, device=device)
    reward = VideoRewardModel.from_checkpoint(checkpoint_path(cfg, "reward"), dtype=dtype, device=device)
    return vae, reward


def build_distiller(
    cfg: RunConfig,
    student: nn.Module,
    critic: nn.Module,
    teacher: nn.Module,
    *,
    vae: WanVAE | None = None,
    reward_model: VideoRewardModel | None = None,
    all_reduce: AllReduceMean | None = None,
) -> StreamR1Distiller:
    """The distiller over three (already prepared) transformers, with its balancer.

    Args:
        cfg: run config.
        student: the causal student transformer (trainable).
        critic: the fake-score transformer (trainable).
        teacher: the real-score transformer (frozen).
        vae: decodes rollouts for the reward (reward modes).
        reward_model: VideoReward (reward modes).
        all_reduce: rank-mean hook for ``reward.balance_sync: all_reduce``.
    """
    return StreamR1Distiller(
        student_denoiser(cfg, student),
        score_denoiser(cfg, critic),
        score_denoiser(cfg, teacher),
        model_cfg=cfg.model,
        rollout_cfg=cfg.rollout,
        dmd_cfg=cfg.dmd,
        reward_cfg=cfg.reward,
        vae=vae,
        reward_model=reward_model,
        balancer=build_balancer(cfg.reward, all_reduce),
    )
