"""The CPU-fast Wan VAE norm computes the stock function and keeps the stock parameters and keys."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm

from stream_r1.models.tiny import build_tiny_vae
from stream_r1.models.vae import WanVAE
from stream_r1.models.vae_norm import ChannelRMSNorm, use_channel_rms_norm


@pytest.mark.parametrize(("channel_first", "images", "bias", "shape"), [
    (True, False, False, (2, 8, 3, 5, 6)),  # video activations [B, C, T, H, W]
    (True, True, True, (2, 8, 5, 6)),  # image activations [B, C, H, W]
    (False, True, False, (2, 7, 8)),  # channels last
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channel_rms_norm_equals_the_stock_norm_forward_and_backward(channel_first, images, bias, shape, dtype):
    stock = WanRMS_norm(8, channel_first=channel_first, images=images, bias=bias)
    with torch.no_grad():
        stock.gamma.uniform_(0.5, 1.5)
        if bias:
            stock.bias.uniform_(-0.5, 0.5)
    fast = ChannelRMSNorm.replacing(stock)
    assert fast.gamma is stock.gamma and fast.bias is stock.bias
    x = (torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3).to(dtype)
    x[0, ..., 0] = 0  # a zero vector hits the eps clamp in both
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    ya, yb = stock(a), fast(b)
    # float32: one reduction order vs another (a few ulp); bfloat16: both normalise in float32 then round.
    tol = {"atol": 1e-6, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 0.0, "rtol": 8e-3}
    torch.testing.assert_close(yb, ya, **tol)
    g = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    (ya * g).sum().backward()
    (yb * g).sum().backward()
    torch.testing.assert_close(b.grad, a.grad, **({"atol": 1e-5, "rtol": 1e-4} if dtype == torch.float32
                                                 else {"atol": 2e-2, "rtol": 2e-2}))


def test_wan_vae_uses_it_and_decodes_as_the_stock_vae():
    stock = build_tiny_vae(0)
    reference = build_tiny_vae(0)
    n = sum(type(m) is WanRMS_norm for m in reference.modules())
    assert n > 0
    keys = list(reference.state_dict())
    vae = WanVAE(stock)
    assert not any(type(m) is WanRMS_norm for m in vae.model.modules())
    assert sum(isinstance(m, ChannelRMSNorm) for m in vae.model.modules()) == n
    assert list(vae.model.state_dict()) == keys
    assert use_channel_rms_norm(vae.model) == 0  # idempotent
    latents = torch.randn(1, 3, 16, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = vae.decode(latents)
        z = vae.denormalize(latents).permute(0, 2, 1, 3, 4)
        theirs = reference.eval().decode(z, return_dict=False)[0].permute(0, 2, 1, 3, 4)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
