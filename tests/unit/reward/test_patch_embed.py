"""The matrix-product patch embedding computes Qwen2-VL's convolution and keeps its parameters and keys."""

from __future__ import annotations

import torch
from transformers.models.qwen2_vl.modeling_qwen2_vl import PatchEmbed

from stream_r1.reward.model import VideoRewardModel
from stream_r1.reward.patch_embed import LinearPatchEmbed, use_linear_patch_embed


def _float64_reference(stock: PatchEmbed, rows: torch.Tensor) -> torch.Tensor:
    """The stock convolution evaluated in float64: the yardstick both float32 paths are held to."""
    conv = torch.nn.Conv3d(3, stock.embed_dim, kernel_size=(2, 14, 14), stride=(2, 14, 14), bias=False).double()
    conv.weight.data.copy_(stock.proj.weight.double())
    return conv(rows.double().view(-1, 3, 2, 14, 14)).view(-1, stock.embed_dim)


def test_linear_patch_embed_equals_the_convolution_forward_and_input_gradient() -> None:
    gen = torch.Generator().manual_seed(0)
    stock = PatchEmbed(embed_dim=48)
    with torch.no_grad():
        stock.proj.weight.normal_(0, 0.05, generator=gen)
    fast = LinearPatchEmbed.replacing(stock)
    assert fast.proj is stock.proj and fast.proj.weight is stock.proj.weight
    assert list(fast.state_dict()) == list(stock.state_dict()) == ["proj.weight"]
    rows = torch.randn(40, 1176, generator=gen)
    exact = _float64_reference(stock, rows)
    a, b = rows.clone().requires_grad_(True), rows.clone().requires_grad_(True)
    ya, yb = stock(a), fast(b)
    # Each output is one 1176-term float32 dot product (|terms| ~ 0.05): both orders sit within a few 1e-6 of
    # the float64 value, so 2e-5 absolute bounds rounding without admitting a wrong weight layout (O(0.1)).
    torch.testing.assert_close(ya.double(), exact, atol=2e-5, rtol=0)
    torch.testing.assert_close(yb.double(), exact, atol=2e-5, rtol=0)
    cot = torch.randn(ya.shape, generator=gen)
    (ga,) = torch.autograd.grad(ya, a, cot)
    (gb,) = torch.autograd.grad(yb, b, cot)
    torch.testing.assert_close(gb, ga, atol=2e-5, rtol=0)
    # A transposed weight layout (the classic mistake) is far outside that tolerance.
    wrong = torch.nn.functional.linear(rows, stock.proj.weight.permute(0, 1, 2, 4, 3).reshape(48, -1))
    assert (wrong.double() - exact).abs().max() > 1e-2


def test_the_loaded_videoreward_uses_it_and_replacing_is_idempotent(tiny_reward: VideoRewardModel) -> None:
    visual = tiny_reward.backbone.model.visual
    assert type(visual.patch_embed) is LinearPatchEmbed
    assert not visual.patch_embed.proj.weight.requires_grad  # frozen like every reward parameter
    assert use_linear_patch_embed(tiny_reward.backbone) == 0
