"""The first-frame causal convolution computes the stock function and keeps the stock parameters and keys."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

from stream_r1.models.tiny import build_tiny_vae
from stream_r1.models.vae import WanVAE
from stream_r1.models.vae_conv import FirstFrameCausalConv3d, use_first_frame_convs


def _pair(kernel: tuple[int, int, int], padding: tuple[int, int, int], stride: int = 1):
    torch.manual_seed(0)
    stock = WanCausalConv3d(6, 5, kernel, stride=stride, padding=padding)
    with torch.no_grad():
        stock.weight.normal_()  # every slice distinct, so taking the wrong temporal slice shows
    return stock, FirstFrameCausalConv3d.replacing(stock)


@pytest.mark.parametrize(("kernel", "padding", "stride"), [
    ((3, 3, 3), (1, 1, 1), 1),  # the residual blocks' convolutions
    ((3, 1, 1), (1, 0, 0), 1),  # the temporal upsampler's time_conv
    ((3, 3, 3), (1, 1, 1), (1, 2, 2)),  # the downsamplers' spatial stride (the fast path uses stride[1:])
])
def test_single_frame_forward_and_backward_equal_the_stock_convolution(kernel, padding, stride):
    stock, fast = _pair(kernel, padding, stride)
    assert fast.weight is stock.weight and fast.bias is stock.bias
    x = torch.randn(2, 6, 1, 7, 9, generator=torch.Generator().manual_seed(1))
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = stock(a), fast(b)
    assert yb.shape == ya.shape
    # The same 54 (or 18) products summed in another order: float32 rounding of sums of O(10) terms.
    torch.testing.assert_close(yb, ya, atol=1e-5, rtol=1e-5)
    g = torch.randn(ya.shape, generator=torch.Generator().manual_seed(2))
    grads = []
    for y, inp in ((ya, a), (yb, b)):
        stock.zero_grad()
        (y * g).sum().backward()
        grads.append((inp.grad.clone(), stock.weight.grad.clone(), stock.bias.grad.clone()))
    for ours, theirs in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    # The past slices only ever see zero padding here: exactly zero gradient in both.
    assert not grads[0][1][:, :, :-1].any() and not grads[1][1][:, :, :-1].any()


def test_every_other_call_is_the_stock_forward_bit_for_bit():
    stock, fast = _pair((3, 3, 3), (1, 1, 1))
    gen = torch.Generator().manual_seed(3)
    clip = torch.randn(1, 6, 4, 5, 5, generator=gen)
    cache = torch.randn(1, 6, 2, 5, 5, generator=gen)
    frame = clip[:, :, :1]
    with torch.no_grad():
        assert torch.equal(fast(clip), stock(clip))  # several frames: the padding's taps meet real frames too
        assert torch.equal(fast(frame, cache), stock(frame, cache))  # cached frames replace the padding
    assert not fast._first_frame_only(clip, None) and fast._first_frame_only(frame, None)


def test_wan_vae_uses_it_and_round_trips_as_the_stock_vae():
    reference = build_tiny_vae(0).eval()
    n = sum(type(m) is WanCausalConv3d for m in reference.modules())
    keys = list(reference.state_dict())
    vae = WanVAE(build_tiny_vae(0))
    assert n > 0 and sum(isinstance(m, FirstFrameCausalConv3d) for m in vae.model.modules()) == n
    assert list(vae.model.state_dict()) == keys
    assert use_first_frame_convs(vae.model) == 0  # idempotent
    video = torch.rand(1, 3, 5, 16, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1  # [B, 3, T, H, W]
    with torch.no_grad():
        ours = vae.model.decode(vae.model.encode(video).latent_dist.mode()).sample
        theirs = reference.decode(reference.encode(video).latent_dist.mode()).sample
    # Float32 rounding through ~20 convolutions and norms of a random VAE (outputs O(1)).
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
