"""Stream-R1 weighting: W_inter, W_intra invariants and a hand-worked example, fusion, balancer arithmetic."""

from __future__ import annotations

import json
import math

import pytest
import torch

from stream_r1.reward.weighting import (
    RewardBalancer,
    fuse_saliency,
    fusion_weights,
    inter_reliability_weight,
    intra_perplexity_weights,
    spatial_factor,
    temporal_factor,
)


def test_inter_reliability_weight() -> None:
    w = inter_reliability_weight(0.25, 2.0)
    assert w.dtype == torch.float64 and w.ndim == 0 and not w.requires_grad
    assert float(w) == pytest.approx(math.exp(0.5), abs=1e-15)
    r = torch.tensor(-0.5, requires_grad=True)
    assert float(inter_reliability_weight(r, 2.0)) == pytest.approx(math.exp(-1.0))
    assert not inter_reliability_weight(r, 2.0).requires_grad
    with pytest.raises(ValueError, match="finite"):
        inter_reliability_weight(float("nan"), 2.0)


def test_intra_hand_worked_example() -> None:
    # S frame0 = [0, 1], frame1 = [2, 2] (H=1, W=2).
    # temporal: profile [0.5, 2] -> p_hat [0, 1] -> tau_raw [0.2 (floor), 1] -> tau [1/3, 5/3]
    # spatial: frame0 [0, 1] -> sigma_raw [0.15 (floor), 1], mean 0.575 -> [0.26087, 1.73913]; frame1 const -> 1
    # W = tau*sigma = [[0.0869565, 0.5797101], [5/3, 5/3]]; mean(W) = 1 already.
    s = torch.tensor([[[0.0, 1.0]], [[2.0, 2.0]]])
    w = intra_perplexity_weights(s)
    expected = torch.tensor([[[0.15 / 0.575 / 3, 1 / 0.575 / 3]], [[5 / 3, 5 / 3]]])
    torch.testing.assert_close(w, expected, rtol=0, atol=1e-6)
    w64 = intra_perplexity_weights(s.double())
    assert w64.dtype == torch.float64
    torch.testing.assert_close(w64, expected.double(), rtol=0, atol=1e-7)
    torch.testing.assert_close(temporal_factor(s, normalise=False), torch.tensor([0.2, 1.0], dtype=torch.float64))


def test_intra_invariants_random() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.rand(7, 6, 10, generator=g) ** 3
    s[3] = 0.5  # a degenerate (constant) frame -> its spatial weights are all ones
    w = intra_perplexity_weights(s)
    assert w.shape == s.shape and w.dtype == torch.float32 and not w.requires_grad
    assert float(w.mean()) == pytest.approx(1.0, abs=1e-6)
    sigma = spatial_factor(s)
    torch.testing.assert_close(sigma.mean(dim=(1, 2)), torch.ones(7, dtype=torch.float64))
    torch.testing.assert_close(sigma[3], torch.ones(6, 10, dtype=torch.float64))
    tau = temporal_factor(s)
    assert float(tau.mean()) == pytest.approx(1.0, abs=1e-12)
    # Floors hold before normalisation and are reached at each frame's / the profile's minimum.
    sigma_raw = spatial_factor(s, normalise=False)
    tau_raw = temporal_factor(s, normalise=False)
    assert float(sigma_raw.min()) == pytest.approx(0.15) and float(tau_raw.min()) == pytest.approx(0.2)
    assert float(tau_raw.max()) == pytest.approx(1.0)
    # W is exactly the product of the factors, mean-normalised.
    prod = tau.view(-1, 1, 1) * sigma
    torch.testing.assert_close(w, (prod / prod.mean()).float())


def test_intra_constant_saliency_gives_ones() -> None:
    torch.testing.assert_close(intra_perplexity_weights(torch.full((5, 4, 4), 3.0)), torch.ones(5, 4, 4))


def test_intra_strength_zero_is_uniform_and_errors() -> None:
    s = torch.rand(4, 3, 3)
    torch.testing.assert_close(
        intra_perplexity_weights(s, spatial_strength=0.0, temporal_strength=0.0), torch.ones(4, 3, 3)
    )
    with pytest.raises(ValueError, match=r"\[F, H, W\]"):
        intra_perplexity_weights(torch.rand(2, 3))
    with pytest.raises(ValueError, match="spatial_min"):
        intra_perplexity_weights(s, spatial_min=1.5)


def test_fusion_weights_and_modes() -> None:
    # softmax(-r): r = (MQ 0, VQ ln2, TA ln4) -> exp(-r) = 1, 1/2, 1/4 -> (4/7, 2/7, 1/7): weaker axis weighs more.
    rewards = {"VQ": math.log(2), "MQ": 0.0, "TA": math.log(4)}
    w = fusion_weights(rewards, ["MQ", "VQ", "TA"])
    assert w == pytest.approx({"MQ": 4 / 7, "VQ": 2 / 7, "TA": 1 / 7})
    w2 = fusion_weights(rewards, ["MQ", "VQ", "TA"], temperature=2.0)  # exp(-r/2) = 1, 1/sqrt2, 1/2
    z = 1 + 2**-0.5 + 0.5
    assert w2 == pytest.approx({"MQ": 1 / z, "VQ": 2**-0.5 / z, "TA": 0.5 / z})
    maps = {"MQ": torch.full((2, 2, 2), 7.0), "VQ": torch.zeros(2, 2, 2), "TA": torch.full((2, 2, 2), 14.0)}
    maps["VQ"][0, 0, 0] = 21.0
    fused = fuse_saliency(maps, rewards)
    assert float(fused[1, 1, 1]) == pytest.approx(4 / 7 * 7 + 1 / 7 * 14)
    assert float(fused[0, 0, 0]) == pytest.approx(4 + 2 / 7 * 21 + 2)
    torch.testing.assert_close(fuse_saliency(maps, rewards, mode="mean")[1, 1, 1], torch.tensor(7.0))
    assert float(fuse_saliency(maps, rewards, mode="max")[0, 0, 0]) == 21.0
    with pytest.raises(ValueError, match="combination"):
        fuse_saliency(maps, rewards, mode="median")
    with pytest.raises(ValueError, match="shapes"):
        fuse_saliency({"MQ": torch.zeros(1, 2, 2), "VQ": torch.zeros(2, 2, 2)}, rewards)


def test_balancer_hand_worked_window_4() -> None:
    b = RewardBalancer(window=4, warmup=4, lam=0.5)
    steps = [(0, 0, 0), (1, 0, 2), (2, 0, 4)]
    for vq, mq, ta in steps:
        assert b.update({"VQ": vq, "MQ": mq, "TA": ta}) == 0.0  # warm-up
    # Step 4: VQ [0,1,2,3] -> 2.5-0.5 = 2; MQ [0,0,0,1] -> 0.5; TA [0,2,4,6] -> 5-1 = 4.
    # Deltas (2, 0.5, 4): mean 13/6; unbiased var = ((1/6)^2 + (5/3)^2 + (11/6)^2) / 2 = 37/12.
    assert b.update({"VQ": 3, "MQ": 1, "TA": 6}) == pytest.approx(math.sqrt(37 / 12))
    # Step 5 (window drops the oldest): VQ [1,2,3,4] -> 2; MQ [0,0,1,3] -> 2; TA [2,4,6,6] -> 3.
    # Deltas (2, 2, 3): unbiased std = sqrt(1/3).
    assert b.update({"VQ": 4, "MQ": 3, "TA": 6}) == pytest.approx(math.sqrt(1 / 3))
    assert b.counter == 5


def test_balancer_odd_window_split_and_min_entries() -> None:
    b = RewardBalancer(window=5, warmup=1)
    for i in range(3):
        assert b.update({"VQ": i, "MQ": 0, "TA": 0}) == 0.0  # < 4 entries, although past warm-up
    b.update({"VQ": 3, "MQ": 0, "TA": 0})
    # n = 5: first floor(5/2) = 2 entries [0, 1] vs the other 3 [2, 3, 4]: delta 3 - 0.5 = 2.5.
    # Deltas (2.5, 0, 0): unbiased var = (2.5^2 * 2/3) / 2 -> std = 2.5 / sqrt(3).
    assert b.update({"VQ": 4, "MQ": 0, "TA": 0}) == pytest.approx(2.5 / math.sqrt(3))


def test_balancer_state_roundtrip_and_all_reduce() -> None:
    a = RewardBalancer(window=4, warmup=2)
    for i in range(6):
        a.update({"VQ": i * 0.3, "MQ": -i * 0.1, "TA": (i % 2) * 1.0})
    state = json.loads(json.dumps(a.state_dict()))  # JSON-serialisable
    b = RewardBalancer(window=4, warmup=2)
    b.load_state_dict(state)
    nxt = {"VQ": 0.7, "MQ": 0.1, "TA": -0.2}
    assert a.update(nxt) == b.update(nxt)
    with pytest.raises(ValueError, match="window"):
        RewardBalancer(window=6).load_state_dict(state)

    seen = []

    def halve(rewards: dict[str, float]) -> dict[str, float]:
        seen.append(dict(rewards))
        return {k: v / 2 for k, v in rewards.items()}

    c = RewardBalancer(window=4, warmup=1, all_reduce=halve)
    c.update({"VQ": 2.0, "MQ": 4.0, "TA": 6.0})
    assert seen == [{"VQ": 2.0, "MQ": 4.0, "TA": 6.0}]
    assert list(c.history["TA"]) == [3.0]
    with pytest.raises(ValueError, match="lack"):
        c.update({"VQ": 1.0})
