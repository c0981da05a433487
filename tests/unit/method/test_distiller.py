"""StreamR1Distiller: one generator step and one critic step on tiny models; plain-DMD loss form (docs/method.md §1.4-1.5)."""

from __future__ import annotations

import pytest
import torch

from stream_r1.config.schema import DMDConfig, ModelConfig, RewardConfig
from stream_r1.losses import dmd_direction
from stream_r1.method.distiller import DistillBatch, StreamR1Distiller
from stream_r1.models.tiny import TINY_TEXT_DIM, TINY_TEXT_LEN

from .conftest import TINY_ROLLOUT

MODEL_CFG = ModelConfig(local_attn_frames=-1, sink_frames=0, dtype="float32", gradient_checkpointing=False)


def _batch(text_emb: torch.Tensor, negative_emb: torch.Tensor) -> DistillBatch:
    return DistillBatch(prompts=["a red fox"], text_emb=text_emb, negative_emb=negative_emb)


def _plain(causal_student, critic, teacher) -> StreamR1Distiller:
    return StreamR1Distiller(
        causal_student,
        critic,
        teacher,
        model_cfg=MODEL_CFG,
        rollout_cfg=TINY_ROLLOUT,
        dmd_cfg=DMDConfig(),
        reward_cfg=RewardConfig(mode="none"),
    )


def _snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(module: torch.nn.Module, before: list[torch.Tensor]) -> bool:
    return any(not torch.equal(p, b) for p, b in zip(module.parameters(), before, strict=True))


def test_plain_dmd_loss_form_and_generator_step(causal_student, critic, teacher, text_emb, negative_emb) -> None:
    distiller = _plain(causal_student, critic, teacher)
    batch = _batch(text_emb, negative_emb)
    step = distiller.generator_loss(batch, 2, torch.Generator().manual_seed(0))
    loss, metrics = step.loss, step.metrics
    assert step.media is None  # only kept when asked for (media steps)
    # Replay the same RNG stream: the loss is 0.5 * mean(g^2) with g the normalised DMD direction.
    replay = torch.Generator().manual_seed(0)
    with torch.no_grad():
        x, _ = distiller.rollout(batch, 2, replay, grad_enabled=False)
    d = dmd_direction(
        x,
        lambda x_t, t: critic.predict_x0(x_t, t, text_emb),
        lambda x_t, t: distiller.real_score(x_t, t, text_emb, negative_emb),
        replay,
    )
    torch.testing.assert_close(loss.detach(), 0.5 * (d.g**2).mean(), rtol=1e-5, atol=1e-12)
    assert loss.dtype == torch.float64
    assert metrics["generator/exit_step"] == 2.0 and metrics["generator/loss"] == pytest.approx(float(loss.detach()))
    assert metrics["generator/dmd_loss"] == pytest.approx(float(loss.detach()))
    assert 20.0 <= metrics["dmd/t"] <= 980.0 and "reward/r" not in metrics

    gen_before, critic_before, teacher_before = (_snapshot(m.transformer) for m in (causal_student, critic, teacher))
    opt = torch.optim.AdamW(causal_student.transformer.parameters(), lr=1e-3, betas=(0.0, 0.999))
    loss.backward()
    assert all(p.grad is None for p in critic.transformer.parameters())
    assert all(p.grad is None for p in teacher.transformer.parameters())
    opt.step()
    assert _changed(causal_student.transformer, gen_before)
    assert not _changed(critic.transformer, critic_before) and not _changed(teacher.transformer, teacher_before)


def test_critic_step_trains_only_the_critic(causal_student, critic, teacher, text_emb, negative_emb) -> None:
    distiller = _plain(causal_student, critic, teacher)
    gen_before, critic_before = _snapshot(causal_student.transformer), _snapshot(critic.transformer)
    opt = torch.optim.AdamW(critic.transformer.parameters(), lr=1e-3, betas=(0.0, 0.999))
    step = distiller.critic_loss(_batch(text_emb, negative_emb), 1, torch.Generator().manual_seed(1))
    loss, metrics = step.loss, step.metrics
    assert torch.isfinite(loss) and loss.requires_grad
    assert metrics["critic/exit_step"] == 1.0 and metrics["critic/loss"] == pytest.approx(float(loss.detach()))
    loss.backward()
    assert all(p.grad is None for p in causal_student.transformer.parameters())
    assert all(p.grad is None for p in teacher.transformer.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in critic.transformer.parameters())
    opt.step()
    assert _changed(critic.transformer, critic_before) and not _changed(causal_student.transformer, gen_before)


def test_reward_modes_need_their_models(causal_student, critic, teacher) -> None:
    with pytest.raises(ValueError, match="needs vae and reward_model"):
        StreamR1Distiller(
            causal_student,
            critic,
            teacher,
            model_cfg=MODEL_CFG,
            rollout_cfg=TINY_ROLLOUT,
            dmd_cfg=DMDConfig(),
            reward_cfg=RewardConfig(mode="MQ"),
        )


def test_batch_shapes_are_checked() -> None:
    emb = torch.zeros(1, TINY_TEXT_LEN, TINY_TEXT_DIM)
    with pytest.raises(ValueError, match="one row per prompt"):
        DistillBatch(prompts=["a", "b"], text_emb=emb, negative_emb=emb)
    with pytest.raises(ValueError, match="negative_emb must be"):
        DistillBatch(prompts=["a"], text_emb=emb, negative_emb=torch.zeros(1, 4, TINY_TEXT_DIM))
