"""Teacher / critic guidance and the cached negative-prompt embedding (docs/method.md §1.4 step 3, §5 item 4)."""

from __future__ import annotations

import pytest
import torch

from stream_r1.method.guidance import GuidedScore, NegativePromptEmbedding, apply_guidance
from stream_r1.models.text_encoder import TextEncoder
from stream_r1.models.tiny import TINY_TEXT_LEN, build_tiny_text_encoder, build_tiny_tokenizer


def test_guidance_formula_is_cfg_weight_four() -> None:
    cond, uncond = torch.tensor([2.0, -1.0]), torch.tensor([1.0, 3.0])
    out = apply_guidance(cond, uncond, 3.0)
    assert out.tolist() == [5.0, -13.0]
    torch.testing.assert_close(out, uncond + 4.0 * (cond - uncond))  # = standard CFG 4.0


def _count_forwards(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_teacher_score_combines_cond_and_negative(teacher, text_emb, negative_emb) -> None:
    x_t = torch.randn(1, 3, 16, 4, 4, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([833.0])
    score = GuidedScore(teacher, 3.0)
    with torch.no_grad():
        guided = score(x_t, t, text_emb, negative_emb)
        cond = teacher.predict_x0(x_t, t, text_emb)
        uncond = teacher.predict_x0(x_t, t, negative_emb)
    torch.testing.assert_close(guided, cond + 3.0 * (cond - uncond))
    assert not torch.allclose(guided, cond)


def test_critic_without_guidance_runs_one_conditional_forward(critic, text_emb) -> None:
    calls = _count_forwards(critic.transformer)
    x_t = torch.randn(2, 3, 16, 4, 4, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([500.0, 900.0])
    score = GuidedScore(critic, 0.0)
    with torch.no_grad():
        out = score(x_t, t, text_emb.expand(2, -1, -1))
    assert calls[0] == 1 and not score.needs_negative
    with torch.no_grad():
        torch.testing.assert_close(out, critic.predict_x0(x_t, t, text_emb.expand(2, -1, -1)))


def test_critic_with_guidance_uses_negative_and_rejects_missing_one(critic, text_emb, negative_emb) -> None:
    x_t = torch.randn(2, 3, 16, 4, 4, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([500.0, 900.0])
    score = GuidedScore(critic, 1.5)
    with torch.no_grad():
        out = score(x_t, t, text_emb.expand(2, -1, -1), negative_emb)  # [1, L, D] broadcast to B = 2
        cond = critic.predict_x0(x_t, t, text_emb.expand(2, -1, -1))
        uncond = critic.predict_x0(x_t, t, negative_emb.expand(2, -1, -1))
    torch.testing.assert_close(out, cond + 1.5 * (cond - uncond))
    with pytest.raises(ValueError, match="negative-prompt embedding"):
        score(x_t, t, text_emb.expand(2, -1, -1))
    with pytest.raises(ValueError, match="guidance_scale=-1"):
        GuidedScore(critic, -1.0)


def test_negative_embedding_is_encoded_once() -> None:
    tokenizer = build_tiny_tokenizer()
    encoder = TextEncoder(build_tiny_text_encoder(0, len(tokenizer)), tokenizer, TINY_TEXT_LEN)
    calls: list[list[str]] = []

    def encode(prompts: list[str]) -> torch.Tensor:
        calls.append(prompts)
        return encoder.encode(prompts)

    neg = NegativePromptEmbedding("static, blurry, low quality", encode)
    assert not neg.computed
    first = neg.get()
    for _ in range(3):
        assert neg.get() is first
    assert neg.expand(4).shape == (4, TINY_TEXT_LEN, first.shape[-1])
    assert calls == [["static, blurry, low quality"]]
    torch.testing.assert_close(first, encoder.encode(["static, blurry, low quality"]))
    assert not first.requires_grad


def test_negative_embedding_shape_is_checked() -> None:
    neg = NegativePromptEmbedding("x", lambda prompts: torch.zeros(2, 4, 8))
    with pytest.raises(ValueError, match=r"expected \[1, L, D\]"):
        neg.get()
