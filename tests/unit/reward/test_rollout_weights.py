"""compute_rollout_weights on the tiny VideoReward with the tiny_cpu reward config."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from stream_r1.config import load_config
from stream_r1.config.schema import RewardConfig
from stream_r1.method.build import build_balancer
from stream_r1.reward.model import VideoRewardModel
from stream_r1.reward.rollout_weights import compute_rollout_weights
from stream_r1.reward.weighting import fusion_weights

LATENT = (6, 4, 4)  # tiny_cpu rollout: 6 latent frames of 4x4 -> 21 frames of 32x32


@pytest.fixture(scope="module")
def cfg() -> RewardConfig:
    return load_config("tiny_cpu").reward


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.rand(21, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_stream_r1_default_weights(tiny_reward: VideoRewardModel, cfg: RewardConfig, pixels: torch.Tensor) -> None:
    balancer = build_balancer(cfg)
    assert balancer is not None and balancer.window == cfg.balance_window
    w = compute_rollout_weights(tiny_reward, pixels, "a fox", LATENT, cfg, balancer)
    assert balancer.counter == 1 and w.penalty == 0.0  # warm-up
    assert w.r == pytest.approx(sum(w.rewards.values()) / 3) and w.r_final == w.r
    assert w.w_inter.dtype == torch.float64 and float(w.w_inter) == pytest.approx(math.exp(cfg.beta * w.r_final))
    assert w.w_intra is not None and w.w_intra.shape == LATENT and not w.w_intra.requires_grad
    assert float(w.w_intra.mean()) == pytest.approx(1.0, abs=1e-5)
    assert w.temporal_profile is not None and w.temporal_profile.shape == (6,)
    assert float(w.temporal_profile.mean()) == pytest.approx(1.0, abs=1e-5)
    assert w.saliency is not None and w.saliency.shape == LATENT
    assert w.fusion == pytest.approx(fusion_weights(w.rewards, list(cfg.saliency_metrics)))
    assert all(p.grad is None for p in tiny_reward.parameters())


def test_balanced_penalty_applied(tiny_reward: VideoRewardModel, cfg: RewardConfig, pixels: torch.Tensor) -> None:
    balancer = build_balancer(cfg)
    assert balancer is not None
    state = balancer.state_dict()
    state.update(counter=10, history={"VQ": [0.0, 0.0, 1.0], "MQ": [0.0, 0.0, 0.0], "TA": [0.0, 0.0, 0.0]})
    balancer.load_state_dict(state)
    w = compute_rollout_weights(tiny_reward, pixels, "a fox", LATENT, cfg, balancer)
    assert w.penalty > 0 and w.penalty == pytest.approx(balancer.penalty())
    assert w.r_final == pytest.approx(w.r - cfg.balance_lambda * w.penalty)
    assert float(w.w_inter) == pytest.approx(math.exp(cfg.beta * w.r_final))


def test_reward_forcing_mode_and_two_passes(
    tiny_reward: VideoRewardModel, cfg: RewardConfig, pixels: torch.Tensor
) -> None:
    rf = dataclasses.replace(cfg, mode="MQ", intra=False)
    w = compute_rollout_weights(tiny_reward, pixels, "a fox", LATENT, rf, None)
    assert w.r == w.rewards["MQ"] and w.penalty == 0.0 and w.w_intra is None and w.saliency is None
    sr1 = dataclasses.replace(
        cfg,
        mode="Overall",
        reward_passes=2,
        saliency_space="patch_reference",
        patch_order="sr1_naive",
        spatial_mapping="trilinear_reference",
        temporal_mapping="trilinear_reference",
    )
    w2 = compute_rollout_weights(tiny_reward, pixels, "a fox", LATENT, sr1, None)
    assert w2.rewards == pytest.approx(w.rewards, abs=1e-5)  # the scalar pass scores like the saliency pass
    assert w2.w_intra is not None and float(w2.w_intra.mean()) == pytest.approx(1.0, abs=1e-5)


def test_errors(tiny_reward: VideoRewardModel, cfg: RewardConfig, pixels: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="plain DMD"):
        compute_rollout_weights(tiny_reward, pixels, "a", LATENT, dataclasses.replace(cfg, mode="none"), None)
    with pytest.raises(ValueError, match="RewardBalancer"):
        compute_rollout_weights(tiny_reward, pixels, "a", LATENT, dataclasses.replace(cfg, intra=False), None)
    with pytest.raises(ValueError, match="index the batch"):
        compute_rollout_weights(tiny_reward, pixels[None], "a", LATENT, cfg, build_balancer(cfg))
    with pytest.raises(ValueError, match="all_reduce hook"):
        build_balancer(dataclasses.replace(cfg, balance_sync="all_reduce"))
