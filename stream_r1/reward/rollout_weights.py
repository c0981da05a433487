"""Per-rollout Stream-R1 weights from the decoded video (docs/method.md §3.3 B-H).

One call per generator micro-step and rollout: score the decoded frames (one grad-enabled reward
pass, or SR1's two), map the fused saliency to the latent grid, and build W_inter and W_intra. The
loss itself (``0.5 * W_inter * mean(W_intra * (x - sg(x - g))^2)``) lives in ``stream_r1.losses.weighted``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from stream_r1.config.schema import RewardConfig
from stream_r1.reward.model import RewardScores
from stream_r1.reward.preprocess import PreprocessOptions
from stream_r1.reward.saliency_map import latent_saliency_maps
from stream_r1.reward.weighting import (
    RewardBalancer,
    fuse_saliency,
    fusion_weights,
    inter_reliability_weight,
    intra_perplexity_weights,
    temporal_factor,
)

SINGLE_AXIS_MODES = ("MQ", "VQ", "TA")


class RewardScorer(Protocol):
    """What :func:`compute_rollout_weights` needs from :class:`stream_r1.reward.model.VideoRewardModel`."""

    def score(self, frames: torch.Tensor, prompt: str, opts: PreprocessOptions | None = None) -> RewardScores:
        """Scores without gradients."""
        ...

    def score_with_saliency(
        self,
        frames: torch.Tensor,
        prompt: str,
        metrics: tuple[str, ...] = ("MQ", "VQ", "TA"),
        space: str = "pixel",
        patch_order: str = "fixed",
        opts: PreprocessOptions | None = None,
    ) -> RewardScores:
        """Scores plus per-axis saliency from one forward."""
        ...


@dataclass(slots=True)
class RolloutWeights:
    """Everything the weighted loss and the logs need for one rollout.

    Attributes:
        w_inter: exp(beta * r_final), 0-d float64, detached.
        w_intra: ``[F, H, W]`` float32 with mean 1 (None when ``reward.intra`` is off).
        rewards: Per-axis z-rewards.
        logits: Per-axis raw logits.
        r: The scalar reward before balancing.
        r_final: ``r - lambda * penalty``.
        penalty: Balance penalty (0 unless BalancedOverall after warm-up).
        temporal_profile: Per-latent-frame temporal weights tau ``[F]`` (mean 1), or None.
        saliency: Fused saliency on the latent grid ``[F, H, W]``, or None.
        fusion: Per-axis fusion weights (adaptive mode; empty otherwise).
    """

    w_inter: torch.Tensor
    w_intra: torch.Tensor | None
    rewards: dict[str, float]
    logits: dict[str, float]
    r: float
    r_final: float
    penalty: float
    temporal_profile: torch.Tensor | None
    saliency: torch.Tensor | None
    fusion: dict[str, float] = field(default_factory=dict)


def _scalar_reward(cfg: RewardConfig, z: dict[str, float], balancer: RewardBalancer | None) -> tuple[float, float]:
    """(r, penalty) for the configured reward mode (§3.3-H)."""
    if cfg.mode in SINGLE_AXIS_MODES:
        return z[cfg.mode], 0.0
    r = sum(z[a] for a in cfg.dims) / len(cfg.dims)
    if cfg.mode == "Overall":
        return r, 0.0
    if balancer is None:
        raise ValueError("reward.mode=BalancedOverall needs a RewardBalancer (stream_r1.method.build.build_balancer)")
    return r, balancer.update(z)


def compute_rollout_weights(
    reward_model: RewardScorer,
    pixels: torch.Tensor,
    prompt: str,
    latent_shape: tuple[int, int, int],
    cfg: RewardConfig,
    balancer: RewardBalancer | None,
) -> RolloutWeights:
    """Stream-R1 weights of one rollout.

    Args:
        reward_model: The loaded VideoReward.
        pixels: Decoded rollout ``[T, 3, Hp, Wp]`` in [-1, 1] (detached inside).
        prompt: Its prompt.
        latent_shape: ``(F, H, W)`` of the rollout latents (T = 4F - 3).
        cfg: The ``reward:`` config section.
        balancer: Required for BalancedOverall (updated here, once per call), else ignored.

    Returns:
        The :class:`RolloutWeights`.

    Raises:
        ValueError: ``reward.mode=none`` (plain DMD calls no reward), bad shapes, or a missing balancer.
    """
    if cfg.mode == "none":
        raise ValueError("reward.mode=none is plain DMD: skip the reward model instead of calling this")
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise ValueError(f"pixels must be one video [T, 3, Hp, Wp], got {tuple(pixels.shape)}; index the batch")
    opts = PreprocessOptions.from_config(cfg)
    frames = pixels.detach()
    sal_scores = None
    if cfg.intra:
        sal_scores = reward_model.score_with_saliency(
            frames, prompt, cfg.saliency_metrics, cfg.saliency_space, cfg.patch_order, opts,
            batched=cfg.saliency_backward == "batched",
        )
    # reward_passes=2 reproduces SR1's separate no-grad scalar pass; 1 reuses the saliency pass' logits.
    scores = (
        sal_scores if sal_scores is not None and cfg.reward_passes == 1 else reward_model.score(frames, prompt, opts)
    )
    z = dict(scores.z)
    r, pen = _scalar_reward(cfg, z, balancer)
    r_final = r - cfg.balance_lambda * pen
    w_intra = tau = fused = None
    fusion: dict[str, float] = {}
    if sal_scores is not None:
        maps = latent_saliency_maps(
            sal_scores.saliency,
            space=cfg.saliency_space,
            frame_indices=sal_scores.frame_indices,
            latent_shape=latent_shape,
            spatial_mapping=cfg.spatial_mapping,
            temporal_mapping=cfg.temporal_mapping,
        )
        # Fusion uses this rollout's per-axis rewards before the balance penalty (§3.2 item 5).
        fused = fuse_saliency(maps, z, mode=cfg.combination, temperature=cfg.temperature)
        if cfg.combination == "adaptive":
            fusion = fusion_weights(z, list(maps), cfg.temperature)
        s_t = cfg.temporal_strength if cfg.temporal else 0.0
        w_intra = intra_perplexity_weights(
            fused,
            spatial_min=cfg.spatial_min,
            temporal_min=cfg.temporal_min,
            spatial_strength=cfg.spatial_strength,
            temporal_strength=s_t,
        )
        tau = temporal_factor(fused, temporal_min=cfg.temporal_min, temporal_strength=s_t).to(torch.float32)
    return RolloutWeights(
        w_inter=inter_reliability_weight(r_final, cfg.beta),
        w_intra=w_intra,
        rewards=z,
        logits=dict(scores.logits),
        r=float(r),
        r_final=float(r_final),
        penalty=float(pen),
        temporal_profile=tau,
        saliency=fused,
        fusion=fusion,
    )
