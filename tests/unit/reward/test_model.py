"""VideoReward forward: prompt/template, 1-D positions, reward tokens, z-normalisation, one pass + 3 gradients."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from stream_r1.reward.model import VideoRewardModel
from stream_r1.reward.preprocess import PreprocessOptions, patchify, preprocess_frames
from stream_r1.reward.prompt import RUBRIC, build_chat_text, build_reward_text

OPTS = PreprocessOptions(min_pixels=784, max_pixels=3136)
PROMPT = "A red fox trotting through fresh snow"


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    return torch.rand(9, 3, 28, 56, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_template_text_is_videoalign_detailed_special() -> None:
    # Golden hash of VideoAlign's DETAILED_PROMPT_WITH_SPECIAL_TOKEN (KwaiVGI/VideoAlign prompt_template.py).
    assert hashlib.sha256(RUBRIC.encode()).hexdigest() == (
        "fdb6309bac618dd0c8b1b589d3a0970a974f7856eecbb355a190b2dce54af700"
    )
    text = build_chat_text(PROMPT, 3)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert text.endswith("END\n<|im_end|>\n<|im_start|>assistant\n")
    assert text.index("<|vision_start|><|video_pad|><|video_pad|><|video_pad|><|vision_end|>") < text.index(
        "You are tasked"
    )
    assert f"Textual prompt - {PROMPT}\n" in build_reward_text(PROMPT)
    with pytest.raises(ValueError, match="special token"):
        build_reward_text("a cat <|MQ_reward|>")


def test_each_reward_token_exactly_once(tiny_reward: VideoRewardModel) -> None:
    ids = tiny_reward.encode_prompt(PROMPT, 2)
    pos = tiny_reward.reward_positions(ids)
    assert pos == sorted(pos) and len(set(pos)) == 3
    dup = torch.cat([ids, ids[:, pos[1] : pos[1] + 1]], dim=1)
    with pytest.raises(ValueError, match=r"MQ .* occurs 2 times"):
        tiny_reward.reward_positions(dup)
    missing = ids[:, : pos[2]]
    with pytest.raises(ValueError, match=r"TA .* occurs 0 times"):
        tiny_reward.reward_positions(missing)


def test_forward_uses_1d_positions(tiny_reward: VideoRewardModel, frames: torch.Tensor) -> None:
    m = tiny_reward
    video = preprocess_frames(frames, OPTS)
    ids = m.encode_prompt(PROMPT, video.num_video_tokens)
    pv, grid = patchify(video.x), video.grid_tensor()
    with torch.no_grad():
        ours = m(pv, grid, ids)
        # Explicit VideoAlign-style call: scatter the ViT tokens, text decoder with position_ids=None (1-D).
        emb = m.backbone.get_input_embeddings()(ids)
        vid = m.backbone.model.visual(pv, grid_thw=grid).pooler_output
        mask = (ids == m.backbone.config.video_token_id).unsqueeze(-1).expand_as(emb)
        hidden = m.backbone.model.language_model(inputs_embeds=emb.masked_scatter(mask, vid)).last_hidden_state
        explicit = m.rm_head(hidden[0, m.reward_positions(ids)])[:, 0]
        # transformers v5's default path (3-D M-RoPE for video tokens) gives different scores.
        mm = (ids == m.backbone.config.video_token_id).int() * 2
        out3d = m.backbone.model(input_ids=ids, pixel_values_videos=pv, video_grid_thw=grid, mm_token_type_ids=mm)
        mrope = m.rm_head(out3d.last_hidden_state[0, m.reward_positions(ids)])[:, 0]
    torch.testing.assert_close(ours, explicit, rtol=0, atol=1e-6)
    assert float((ours - mrope).abs().max()) > 1e-4


def test_a_batch_scores_each_row_as_it_scores_alone(tiny_reward: VideoRewardModel, frames: torch.Tensor) -> None:
    m = tiny_reward
    videos = [preprocess_frames(frames, OPTS), preprocess_frames(frames.flip(0), OPTS)]
    prompts = [PROMPT, "A blue fox trotting through fresh snow"]  # same token count: one template
    ids = torch.cat([m.encode_prompt(p, videos[0].num_video_tokens) for p in prompts])
    with torch.no_grad():
        alone = torch.stack([m(patchify(v.x), v.grid_tensor(), ids[i : i + 1]) for i, v in enumerate(videos)])
        emb = m.embed_video(torch.cat([patchify(v.x) for v in videos]), torch.cat([v.grid_tensor() for v in videos]))
        batched = m.batch_logits_from_embeds(emb, ids)
    assert batched.shape == (2, 3) and not torch.equal(batched[0], batched[1])
    # The same products per row; a batched matmul may sum in another order: float32 rounding of O(1) logits.
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"must be \[1, L\]"):
        m.logits_from_embeds(emb, ids)
    shifted = torch.cat([ids[:1], torch.cat([ids[1:, 1:], ids[1:, :1]], dim=1)])  # row 2's tokens one place left
    with pytest.raises(ValueError, match="different positions"):
        m.reward_positions(shifted)


def test_score_z_normalisation(tiny_reward: VideoRewardModel, frames: torch.Tensor) -> None:
    s = tiny_reward.score(frames, PROMPT, OPTS)
    for a in ("VQ", "MQ", "TA"):
        assert s.z[a] == pytest.approx((s.logits[a] - tiny_reward.means[a]) / tiny_reward.stds[a])
    assert s.overall == pytest.approx(sum(s.z.values()) / 3)
    assert s.frame_indices == tuple(range(8)) and s.grid_thw == (4, 2, 4)


def test_one_forward_three_gradients(tiny_reward: VideoRewardModel, frames: torch.Tensor) -> None:
    m = tiny_reward
    s = m.score_with_saliency(frames, PROMPT, opts=OPTS)
    assert list(s.saliency) == ["MQ", "VQ", "TA"] and s.space == "pixel"
    assert s.logits == pytest.approx(m.score(frames, PROMPT, OPTS).logits, abs=1e-5)  # 1 pass == 2 passes
    # Each axis' map equals the RGB-L2 of an independent single-axis gradient (retain_graph did not leak).
    video = preprocess_frames(frames, OPTS)
    ids = m.encode_prompt(PROMPT, video.num_video_tokens)
    for i, axis in enumerate(("VQ", "MQ", "TA")):
        x = video.x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(m(patchify(x), video.grid_tensor(), ids)[i], x)
        sal = s.saliency[axis]
        assert sal.shape == (8, 28, 56) and sal.dtype == torch.float32 and float(sal.sum()) > 0
        torch.testing.assert_close(sal, g.norm(dim=1), rtol=1e-4, atol=1e-7)
    assert all(p.grad is None for p in m.parameters())


def test_patch_reference_is_l2_aggregate_of_pixel_saliency(tiny_reward: VideoRewardModel, frames: torch.Tensor) -> None:
    pix = tiny_reward.score_with_saliency(frames, PROMPT, metrics=("TA",), opts=OPTS).saliency["TA"]  # [8, 28, 56]
    patch = tiny_reward.score_with_saliency(frames, PROMPT, metrics=("TA",), space="patch_reference", opts=OPTS)
    t, h, w = patch.grid_thw
    agg = pix.reshape(t, 2, h, 14, w, 14).pow(2).sum(dim=(1, 3, 5)).sqrt()
    torch.testing.assert_close(patch.saliency["TA"], agg, rtol=1e-4, atol=1e-7)
    emb = tiny_reward.score_with_saliency(frames, PROMPT, metrics=("VQ", "TA"), space="embeds", opts=OPTS)
    assert emb.saliency["VQ"].shape == (t, h // 2, w // 2)


def test_gradient_checkpointing_recomputes_and_matches(tiny_reward_dir: Path, frames: torch.Tensor) -> None:
    plain = VideoRewardModel.from_checkpoint(tiny_reward_dir)
    ckpt = VideoRewardModel.from_checkpoint(tiny_reward_dir, gradient_checkpointing=True)
    calls = []
    # A pre-hook: checkpoint's early-stopping recompute halts inside the last module, before forward hooks.
    ckpt.backbone.model.visual.blocks[0].mlp.register_forward_pre_hook(lambda *_: calls.append(1))
    a = plain.score_with_saliency(frames, PROMPT, metrics=("MQ", "TA"), opts=OPTS)
    b = ckpt.score_with_saliency(frames, PROMPT, metrics=("MQ", "TA"), opts=OPTS)
    assert len(calls) > 1  # the block ran again during backward (recomputation)
    assert b.logits == pytest.approx(a.logits, abs=1e-6)
    for axis in ("MQ", "TA"):
        torch.testing.assert_close(b.saliency[axis], a.saliency[axis], rtol=1e-5, atol=1e-8)


# The chat template shipped in Qwen2-VL-2B-Instruct's tokenizer/processor config.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_chat_text_equals_rendered_qwen2vl_template(tiny_reward: VideoRewardModel) -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "video", "video": "file://x.mp4"},
                {"type": "text", "text": build_reward_text(PROMPT)},
            ],
        }
    ]
    rendered = tiny_reward.tokenizer.apply_chat_template(
        messages, chat_template=QWEN2_VL_CHAT_TEMPLATE, tokenize=False, add_generation_prompt=True
    )
    # The processor then expands the single <|video_pad|> into one token per merged patch.
    assert build_chat_text(PROMPT, 5) == rendered.replace("<|video_pad|>", "<|video_pad|>" * 5)


@pytest.mark.parametrize("space", ["pixel", "patch_reference", "embeds"])
def test_batched_backward_equals_one_backward_per_axis(
    tiny_reward: VideoRewardModel, frames: torch.Tensor, space: str
) -> None:
    # One vmapped backward computes the same vector-Jacobian products as three separate backwards; only
    # the float32 summation order inside batched kernels may differ. A few float32 ulps (eps = 1.2e-7)
    # per backward op over the model's depth stay well under rtol 1e-5 relative to each map's scale.
    # (Measured on the tiny model, x86-64 CPU: bit-identical.)
    batched = tiny_reward.score_with_saliency(frames, PROMPT, space=space, opts=OPTS)
    per_axis = tiny_reward.score_with_saliency(frames, PROMPT, space=space, opts=OPTS, batched=False)
    assert list(batched.saliency) == list(per_axis.saliency) == ["MQ", "VQ", "TA"]
    for axis, want in per_axis.saliency.items():
        got = batched.saliency[axis]
        assert float(want.abs().max()) > 0
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    assert batched.logits == per_axis.logits  # the same forward
