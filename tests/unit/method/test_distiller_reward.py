"""Reward modes of the distiller on tiny real VAE + VideoReward: Reward Forcing (MQ) and Stream-R1 loss forms."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from stream_r1.config.schema import DMDConfig, ModelConfig, RewardConfig
from stream_r1.losses import dmd_direction
from stream_r1.method.distiller import DistillBatch, StreamR1Distiller
from stream_r1.models.tiny import build_tiny_vae
from stream_r1.models.vae import WanVAE
from stream_r1.reward.model import VideoRewardModel
from stream_r1.reward.tiny import write_tiny_videoreward
from stream_r1.reward.weighting import RewardBalancer

from .conftest import TINY_ROLLOUT

MODEL_CFG = ModelConfig(local_attn_frames=-1, sink_frames=0, dtype="float32", gradient_checkpointing=False)
# tiny_cpu reward budget: 32x32 decoded frames are scored at 28x28.
TINY_REWARD = {"min_pixels": 784, "max_pixels": 3136, "balance_window": 4, "balance_warmup": 4}


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory: pytest.TempPathFactory) -> VideoRewardModel:
    root: Path = tmp_path_factory.mktemp("reward") / "VideoReward"
    return VideoRewardModel.from_checkpoint(write_tiny_videoreward(root))


@pytest.fixture(scope="module")
def vae() -> WanVAE:
    return WanVAE(build_tiny_vae(0))


def _distiller(student, critic, teacher, vae, reward_model, reward_cfg, balancer=None) -> StreamR1Distiller:
    return StreamR1Distiller(
        student,
        critic,
        teacher,
        model_cfg=MODEL_CFG,
        rollout_cfg=TINY_ROLLOUT,
        dmd_cfg=DMDConfig(),
        reward_cfg=reward_cfg,
        vae=vae,
        reward_model=reward_model,
        balancer=balancer,
    )


def _replay_g(distiller: StreamR1Distiller, batch: DistillBatch, k: int, seed: int) -> torch.Tensor:
    """The DMD direction of the step with this seed (same RNG stream as generator_loss)."""
    replay = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        x, _ = distiller.rollout(batch, k, replay, grad_enabled=False)
    return dmd_direction(
        x,
        lambda x_t, t: distiller.fake_score(x_t, t, batch.text_emb, batch.negative_emb),
        lambda x_t, t: distiller.real_score(x_t, t, batch.text_emb, batch.negative_emb),
        replay,
    ).g


def test_reward_forcing_mode_is_exp_beta_mq_times_dmd(
    causal_student, critic, teacher, vae, reward_model, text_emb, negative_emb
) -> None:
    cfg = RewardConfig(mode="MQ", intra=False, **TINY_REWARD)
    distiller = _distiller(causal_student, critic, teacher, vae, reward_model, cfg)
    batch = DistillBatch(["a red fox in the snow"], text_emb, negative_emb)
    step = distiller.generator_loss(batch, 1, torch.Generator().manual_seed(3), keep_media=True)
    loss, m = step.loss, step.metrics
    assert m["reward/r"] == m["reward/MQ"] == m["reward/r_final"] and m["reward/penalty"] == 0.0
    assert m["reward/w_inter"] == pytest.approx(math.exp(2.0 * m["reward/MQ"]))
    # L = 0.5 exp(beta MQ) mean((x - sg(x - g))^2) = exp(beta MQ) * the plain DMD surrogate.
    assert float(loss.detach()) == pytest.approx(m["reward/w_inter"] * m["generator/dmd_loss"], rel=1e-9)
    assert step.media is not None and step.media.w_intra is None and step.media.pixels is not None
    assert not any(k.startswith("w_intra/") for k in m)


def test_stream_r1_mode_weights_dmd_by_inter_and_intra(
    causal_student, critic, teacher, vae, reward_model, text_emb, negative_emb
) -> None:
    cfg = RewardConfig(mode="BalancedOverall", **TINY_REWARD)
    balancer = RewardBalancer(window=4, warmup=4, lam=0.5)
    distiller = _distiller(causal_student, critic, teacher, vae, reward_model, cfg, balancer)
    batch = DistillBatch(["a red fox in the snow"], text_emb, negative_emb)
    step = distiller.generator_loss(batch, 2, torch.Generator().manual_seed(4), keep_media=True)
    loss, m, media = step.loss, step.metrics, step.media
    assert media is not None and media.w_intra is not None and media.pixels is not None
    w = media.w_intra  # [B, F, H, W]
    assert w.shape == (1, 6, 4, 4) and float(w.mean()) == pytest.approx(1.0, rel=1e-5)
    assert media.pixels.shape == (1, 21, 3, 32, 32) and media.temporal_profile.shape == (1, 6)
    assert balancer.counter == 1 and m["reward/penalty"] == 0.0  # still warming up
    r = (m["reward/VQ"] + m["reward/MQ"] + m["reward/TA"]) / 3
    assert m["reward/r"] == pytest.approx(r) and m["reward/w_inter"] == pytest.approx(math.exp(2.0 * r))
    g = _replay_g(distiller, batch, 2, 4)
    expected = 0.5 * m["reward/w_inter"] * (w.double()[:, :, None] * g**2).mean()
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert {"w_intra/min", "w_intra/max", "w_intra/temporal/00", "w_intra/temporal/05"} <= set(m)

    critic_before = [p.detach().clone() for p in critic.transformer.parameters()]
    loss.backward()
    assert any(p.grad is not None for p in causal_student.transformer.parameters())
    assert all(p.grad is None for p in critic.transformer.parameters())
    assert all(p.grad is None for p in teacher.transformer.parameters())
    assert all(p.grad is None for p in reward_model.parameters())
    assert all(torch.equal(p, b) for p, b in zip(critic.transformer.parameters(), critic_before, strict=True))


def test_balanced_overall_requires_a_balancer(causal_student, critic, teacher, vae, reward_model) -> None:
    with pytest.raises(ValueError, match="needs a RewardBalancer"):
        _distiller(causal_student, critic, teacher, vae, reward_model, RewardConfig(mode="BalancedOverall"))


def test_batch_of_two_weights_each_rollout_by_its_own_reward(
    causal_student, critic, teacher, vae, reward_model, text_emb, negative_emb
) -> None:
    from stream_r1.reward.preprocess import PreprocessOptions

    cfg = RewardConfig(mode="Overall", intra=False, **TINY_REWARD)
    distiller = _distiller(causal_student, critic, teacher, vae, reward_model, cfg)
    prompts = ["a red fox in the snow", "a boat on the ocean at sunset"]
    batch = DistillBatch(prompts, torch.cat([text_emb, negative_emb]), negative_emb)
    step = distiller.generator_loss(batch, 0, torch.Generator().manual_seed(8), keep_media=True)
    loss, m, media = step.loss, step.metrics, step.media
    assert media is not None and media.rollout.shape == (1, 6, 16, 4, 4)  # the first rollout, for logging
    with torch.no_grad():
        rollout, _ = distiller.rollout(batch, 0, torch.Generator().manual_seed(8), grad_enabled=False)
        pixels = vae.decode(rollout)
    # The kept pixels are the reward's own decode of the first rollout (logging decodes nothing again).
    torch.testing.assert_close(media.pixels, pixels[:1].float(), rtol=0, atol=0)
    opts = PreprocessOptions.from_config(cfg)
    r = [sum(reward_model.score(pixels[b], p, opts).z.values()) / 3 for b, p in enumerate(prompts)]
    assert r[0] != pytest.approx(r[1])
    assert m["reward/r"] == pytest.approx(sum(r) / 2, rel=1e-5)
    g = _replay_g(distiller, batch, 0, 8)
    per_sample = 0.5 * (g**2).mean(dim=(1, 2, 3, 4))
    expected = sum(math.exp(2.0 * r[b]) * float(per_sample[b]) for b in range(2)) / 2
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
