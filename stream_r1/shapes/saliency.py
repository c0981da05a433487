"""Where does Stream-R1's intra weighting land? W_intra of a rollout beside the object's mask.

The object's ground-truth mask (:func:`stream_r1.shapes.detect.object_mask`) is pooled onto the
latent grid the weights live on: each latent frame covers its VAE frame group (``[0], [1..4], ...``)
and each latent cell an 8x8 pixel block, so the mask becomes the fraction of object pixels per cell.
The Pearson correlation of W_intra with that coverage says whether the reward's gradients point at
the object (positive), at the background (negative) or nowhere in particular (about 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stream_r1.config.schema import RewardConfig
from stream_r1.method.build import build_balancer
from stream_r1.reward.model import VideoRewardModel
from stream_r1.reward.rollout_weights import compute_rollout_weights
from stream_r1.reward.saliency_map import vae_frame_groups
from stream_r1.shapes.detect import object_mask


@dataclass(frozen=True, slots=True)
class IntraVsMask:
    """One rollout's W_intra ``[F, H, W]``, its object coverage on the same grid, and their correlation."""

    w_intra: torch.Tensor
    coverage: torch.Tensor
    correlation: float


def latent_coverage(frames: torch.Tensor, latent_shape: tuple[int, int, int]) -> torch.Tensor:
    """Fraction of object pixels per latent cell ``[F, H, W]`` of a video ``[T, 3, Hp, Wp]``."""
    f, h, w = latent_shape
    mask = object_mask(frames).float()  # [T, Hp, Wp]
    groups = vae_frame_groups(f)
    per_frame = torch.stack([mask[g].mean(dim=0) for g in groups])  # [F, Hp, Wp]
    return torch.nn.functional.adaptive_avg_pool2d(per_frame.unsqueeze(1), (h, w)).squeeze(1)


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two equally shaped tensors (NaN when either is constant)."""
    x, y = a.flatten().double(), b.flatten().double()
    x, y = x - x.mean(), y - y.mean()
    den = float(x.norm() * y.norm())
    return float((x * y).sum()) / den if den > 0 else float("nan")


def intra_vs_mask(
    reward: VideoRewardModel, frames: torch.Tensor, prompt: str, latent_shape: tuple[int, int, int], cfg: RewardConfig
) -> IntraVsMask:
    """W_intra of one decoded rollout (the training code's :func:`compute_rollout_weights`) vs its mask.

    Raises:
        ValueError: ``cfg.intra`` is off (there is no W_intra to compare).
    """
    if not cfg.intra:
        raise ValueError("reward.intra=false: this run has no W_intra; use a config with reward.intra=true")
    weights = compute_rollout_weights(reward, frames, prompt, latent_shape, cfg, build_balancer(cfg))
    assert weights.w_intra is not None
    cov = latent_coverage(frames, latent_shape)
    return IntraVsMask(weights.w_intra.float(), cov, pearson(weights.w_intra, cov))
