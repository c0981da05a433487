"""Every Stream-R1 weighting constant is honoured at values other than the recipe's.

The recipe's constants (beta 2, floors 0.2 / 0.15, temperature 1, balance window/warm-up 50, lambda 0.5)
are the only values most tests use, so a constant hard-coded inside the weighting code would pass them.
Here each one is varied and the result is checked against the closed form it must satisfy.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from stream_r1.config import load_config
from stream_r1.method.build import build_balancer
from stream_r1.reward.model import VideoRewardModel
from stream_r1.reward.rollout_weights import compute_rollout_weights
from stream_r1.reward.weighting import (
    RewardBalancer,
    fusion_weights,
    intra_perplexity_weights,
    spatial_factor,
    temporal_factor,
)

LATENT = (6, 4, 4)


def _saliency(seed: int = 0) -> torch.Tensor:
    return torch.rand(*LATENT, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("beta", [0.0, 0.7, 3.5])
def test_beta_scales_the_rollout_weight_as_an_inverse_temperature(tiny_reward: VideoRewardModel, beta: float) -> None:
    cfg = dataclasses.replace(load_config("tiny_cpu", [f"reward.beta={beta}"]).reward, intra=False)
    assert cfg.beta == beta
    pixels = torch.rand(21, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    w = compute_rollout_weights(tiny_reward, pixels, "a fox", LATENT, cfg, build_balancer(cfg))
    assert w.r_final != 0.0
    assert float(w.w_inter) == pytest.approx(math.exp(beta * w.r_final), rel=1e-12)


@pytest.mark.parametrize(("floor", "strength"), [(0.1, 1.0), (0.45, 1.0), (0.2, 0.5), (0.05, 0.3)])
def test_temporal_floor_and_strength(floor: float, strength: float) -> None:
    # p_hat spans [0, 1], so before the mean normalisation tau spans [max(1 - s, floor), 1].
    tau = temporal_factor(_saliency(), temporal_min=floor, temporal_strength=strength)
    assert float(tau.mean()) == pytest.approx(1.0, abs=1e-12)
    assert float(tau.min() / tau.max()) == pytest.approx(max(1.0 - strength, floor), abs=1e-12)


@pytest.mark.parametrize(("floor", "strength"), [(0.05, 1.0), (0.4, 1.0), (0.15, 0.6)])
def test_spatial_floor_and_strength_per_frame(floor: float, strength: float) -> None:
    sigma = spatial_factor(_saliency(2), spatial_min=floor, spatial_strength=strength)
    for f in range(LATENT[0]):
        frame = sigma[f]
        assert float(frame.mean()) == pytest.approx(1.0, abs=1e-12)
        assert float(frame.min() / frame.max()) == pytest.approx(max(1.0 - strength, floor), abs=1e-12)


@pytest.mark.parametrize(("t_floor", "s_floor"), [(0.1, 0.3), (0.5, 0.05)])
def test_intra_weights_factorise_with_the_given_floors(t_floor: float, s_floor: float) -> None:
    s = _saliency(3)
    w = intra_perplexity_weights(s, temporal_min=t_floor, spatial_min=s_floor)
    tau = temporal_factor(s, temporal_min=t_floor)
    # each frame's spatial weights have mean 1, so frame means of W are proportional to tau
    frame_means = w.mean(dim=(1, 2))
    torch.testing.assert_close(frame_means / frame_means.mean(), tau / tau.mean(), rtol=1e-12, atol=0)
    for f in range(LATENT[0]):
        assert float(w[f].min() / w[f].max()) == pytest.approx(s_floor, abs=1e-12)


@pytest.mark.parametrize("temperature", [0.25, 1.0, 4.0])
def test_fusion_temperature(temperature: float) -> None:
    rewards = {"MQ": 0.3, "VQ": -0.4, "TA": 1.1}
    w = fusion_weights(rewards, ["MQ", "VQ", "TA"], temperature)
    assert sum(w.values()) == pytest.approx(1.0)
    assert w["VQ"] / w["MQ"] == pytest.approx(math.exp((0.3 - -0.4) / temperature), rel=1e-12)
    assert w["TA"] / w["MQ"] == pytest.approx(math.exp((0.3 - 1.1) / temperature), rel=1e-12)


def _drive(balancer: RewardBalancer, n: int) -> list[float]:
    vq = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    ta = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    return [balancer.update({"VQ": vq[i], "MQ": 0.0, "TA": ta[i]}) for i in range(n)]


def test_balancer_window_and_warmup_other_than_the_recipe() -> None:
    # window 6, warm-up 6: zero for 5 updates, then halves [0,1,2]/[3,4,5] -> deltas VQ 3, MQ 0, TA 1,
    # unbiased std sqrt(7/3).
    pens = _drive(RewardBalancer(window=6, warmup=6, lam=0.9), 6)
    assert pens[:5] == [0.0] * 5 and pens[5] == pytest.approx(math.sqrt(7 / 3), rel=1e-12)
    # warm-up 4 with the same window: the 4th update already sees VQ [0,1]/[2,3] and TA [0,0]/[0,1] ->
    # deltas 2, 0, 0.5 -> std sqrt(13/12).
    pens = _drive(RewardBalancer(window=6, warmup=4, lam=0.9), 4)
    assert pens[:3] == [0.0] * 3 and pens[3] == pytest.approx(math.sqrt(13 / 12), rel=1e-12)
    # window 4 keeps only the last 4 of 8: [4,5]/[6,7] -> VQ 2, MQ 0, TA 0 -> std 2/sqrt(3).
    pens = _drive(RewardBalancer(window=4, warmup=1, lam=0.9), 8)
    assert pens[-1] == pytest.approx(2 / math.sqrt(3), rel=1e-12)


@pytest.mark.parametrize("lam", [0.1, 1.5])
def test_balance_lambda_flows_from_config(tiny_reward: VideoRewardModel, lam: float) -> None:
    cfg = dataclasses.replace(load_config("tiny_cpu", [f"reward.balance_lambda={lam}"]).reward, intra=False)
    balancer = build_balancer(cfg)
    assert balancer is not None
    state = balancer.state_dict()
    state.update(counter=10, history={"VQ": [0.0, 0.0, 1.0], "MQ": [0.0, 0.0, 0.0], "TA": [0.0, 0.0, 0.0]})
    balancer.load_state_dict(state)
    pixels = torch.rand(21, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    w = compute_rollout_weights(tiny_reward, pixels, "a fox", LATENT, cfg, balancer)
    assert w.penalty > 0
    assert w.r_final == pytest.approx(w.r - lam * w.penalty, rel=1e-12)
