"""The world VAE's training recipe: frame-wise initialisation, per-phase learning rates, clip-phase weights, loss."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import WanResample

from stream_r1.models.vae_conv import use_first_frame_convs
from stream_r1.models.vae_norm import use_channel_rms_norm
from stream_r1.shapes.vae import (
    CHROMA_WEIGHT,
    CLIP_LR,
    LR,
    VAE_CONFIG,
    autoencode_frames,
    clamp_aware_error,
    decode_unclamped,
    framewise_init_,
    phase_lr,
    temporal_kernels,
)


def test_temporal_upsamplers_start_by_interpolating_and_downsamplers_by_picking_the_newest_frame() -> None:
    torch.manual_seed(0)
    vae = framewise_init_(AutoencoderKLWan(**VAE_CONFIG))
    ups = [m for m in vae.decoder.modules() if isinstance(m, WanResample) and m.mode == "upsample3d"]
    downs = [m for m in vae.encoder.modules() if isinstance(m, WanResample) and m.mode == "downsample3d"]
    assert len(ups) == len(downs) == 2
    for m in ups:
        c = m.time_conv.in_channels
        x = torch.randn(1, c, 2, 3, 3)  # frames t - 1, t
        out = m.time_conv(x)[:, :, -1]  # outputs of frame t: [first half = frame 2t, second = 2t + 1]
        torch.testing.assert_close(out[:, :c], 0.5 * (x[:, :, 0] + x[:, :, 1]))
        torch.testing.assert_close(out[:, c:], x[:, :, 1])
    for m in downs:
        x = torch.randn(1, m.time_conv.in_channels, 3, 3, 3)
        torch.testing.assert_close(m.time_conv(x)[:, :, 0], x[:, :, 2])


def test_each_phase_starts_at_its_peak_learning_rate_and_decays_to_zero() -> None:
    assert phase_lr(0, 100, 20) == pytest.approx(LR)
    assert phase_lr(100, 100, 20) == pytest.approx(CLIP_LR)  # the clip phase is not at the image cosine's tail
    assert phase_lr(99, 100, 20) < 1e-3 * LR and phase_lr(119, 100, 20) < 0.01 * CLIP_LR
    assert phase_lr(0, 0, 20) == pytest.approx(CLIP_LR)


def test_clip_phase_weights_do_not_change_what_a_single_frame_decodes_to() -> None:
    # The clip phase trains only temporal_kernels (masked), so it cannot undo the image phase's frames.
    torch.manual_seed(0)
    vae = framewise_init_(AutoencoderKLWan(**VAE_CONFIG)).eval()
    frame, clip = torch.rand(1, 3, 1, 16, 16) * 2 - 1, torch.rand(1, 3, 5, 16, 16) * 2 - 1
    with torch.no_grad():
        before = [vae.decode(vae.encode(x).latent_dist.mode()).sample for x in (frame, clip)]
        for p, mask in temporal_kernels(vae).items():
            p.add_(mask * torch.randn_like(p))
        after = [vae.decode(vae.encode(x).latent_dist.mode()).sample for x in (frame, clip)]
    torch.testing.assert_close(after[0], before[0])
    assert (after[1] - before[1]).abs().max() > 1e-2  # the masked parts are the ones clips depend on


def test_clamp_aware_error_ignores_overshoot_of_saturated_targets_and_sees_through_the_clamp() -> None:
    target = torch.tensor([-1.0, 1.0, 0.0, -1.0]).view(1, 1, 1, 1, 4).expand(1, 3, 1, 1, 4)
    assert clamp_aware_error(torch.tensor([-3.0, 2.0, 0.0, -1.0]).view(1, 1, 1, 1, 4).expand_as(target), target) == 0
    raw = torch.tensor([-3.0, 2.0, 0.0, -1.0]).view(1, 1, 1, 1, 4).repeat(1, 3, 1, 1, 1)
    raw[..., 3] = -2.0  # a pixel of a bright target (1) clamped to -1 ...
    target = target.clone()
    target[..., 3] = 1.0
    raw.requires_grad_(True)
    clamp_aware_error(raw, target).backward()
    assert raw.grad is not None and float(raw.grad[..., 3].sum()) < 0  # ... is pushed up, through the clamp
    assert float(raw.grad[..., :3].abs().sum()) == 0


def test_decode_unclamped_is_the_decode_before_its_clamp() -> None:
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**VAE_CONFIG).eval()
    with torch.no_grad():
        vae.decoder.conv_out.weight.mul_(50)  # outputs far outside [-1, 1]
        z = torch.randn(1, 16, 2, 2, 2)
        raw, out = decode_unclamped(vae, z), vae.decode(z).sample
    assert raw.shape == out.shape and raw.abs().max() > 1
    torch.testing.assert_close(raw.clamp(-1, 1), out)


def test_an_error_between_red_and_green_costs_more_than_one_along_both() -> None:
    # An unsaturated pixel (no clamp side), two errors of the same plain size: +1 on red and green together
    # (brighter, no hue change) and +1 red / -1 green (a hue change between the two colours the VAE confuses).
    target = torch.zeros(1, 3, 1, 1, 1)
    along = target + torch.tensor([1.0, 1.0, 0.0]).view(1, 3, 1, 1, 1)
    between = target + torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1, 1)
    plain = 2.0 / 3.0  # mean over the 3 channels of the squared error, in both cases
    assert float(clamp_aware_error(along, target)) == pytest.approx(plain)
    assert float(clamp_aware_error(between, target)) == pytest.approx(plain + CHROMA_WEIGHT * 4.0)


@pytest.mark.parametrize("as_built", [False, True])
def test_autoencode_frames_is_encode_then_unclamped_decode_to_the_bit_with_the_same_gradients(as_built: bool) -> None:
    # Stock modules with random past kernel slices, and the build's (CPU norm, first-frame convolutions,
    # frame-wise init): on one frame the cached and uncached paths must run the same operations on the same values.
    torch.manual_seed(0)
    vae, twin = (AutoencoderKLWan(**VAE_CONFIG).train() for _ in range(2))
    twin.load_state_dict(vae.state_dict())
    if as_built:
        for m in (vae, twin):
            use_channel_rms_norm(m), use_first_frame_convs(m), framewise_init_(m)
    x = torch.rand(3, 3, 1, 32, 32) * 2 - 1
    mu = vae.encode(x).latent_dist.mode()
    raw = decode_unclamped(vae, mu)
    raw_twin, mu_twin = autoencode_frames(twin, x)
    assert torch.equal(raw, raw_twin) and torch.equal(mu, mu_twin)
    (raw.square().mean() + mu.square().mean()).backward()
    (raw_twin.square().mean() + mu_twin.square().mean()).backward()
    for (name, a), b in zip(vae.named_parameters(), twin.parameters(), strict=True):
        assert (a.grad is None) == (b.grad is None), name
        assert a.grad is None or torch.equal(a.grad, b.grad), name


def test_autoencode_frames_refuses_clips() -> None:
    with pytest.raises(ValueError, match="single frames"):
        autoencode_frames(AutoencoderKLWan(**VAE_CONFIG), torch.zeros(1, 3, 5, 32, 32))
