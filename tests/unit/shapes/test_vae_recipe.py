"""The world VAE's training recipe: the frame-wise initialisation and the per-phase learning rates."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import WanResample

from stream_r1.shapes.vae import CLIP_LR, LR, VAE_CONFIG, framewise_init_, phase_lr


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
