"""Stream-R1 weighted loss: dL/dx = exp(beta r) * W_intra * g / N, broadcasting, masks (docs/method.md §3.3 I)."""

from __future__ import annotations

import math

import pytest
import torch

from stream_r1.losses import dmd_surrogate_loss, normalized_direction, weighted_dmd_loss

SHAPE = (1, 3, 4, 2, 5)  # B, F, C, H, W


def _setup(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPE, generator=gen).requires_grad_(True)
    g, _ = normalized_direction(x, torch.randn(SHAPE, generator=gen), torch.randn(SHAPE, generator=gen))
    w = torch.rand(SHAPE[1], SHAPE[3], SHAPE[4], generator=gen) + 0.15
    return x, g, w / w.mean()


def test_gradient_equals_inter_times_intra_times_g_over_n() -> None:
    x, g, w_intra = _setup()
    beta, r_final = 2.0, 0.3
    w_inter = math.exp(beta * r_final)
    loss = weighted_dmd_loss(x, g, w_inter, w_intra)
    loss.backward()
    expected = w_inter * w_intra.double().view(1, SHAPE[1], 1, SHAPE[3], SHAPE[4]) * g / x.numel()
    torch.testing.assert_close(x.grad.double(), expected)
    torch.testing.assert_close(loss, 0.5 * w_inter * (w_intra.double()[None, :, None] * g**2).mean())
    assert loss.dtype == torch.float64


def test_unit_weights_reduce_to_plain_dmd() -> None:
    x, g, _ = _setup(1)
    torch.testing.assert_close(weighted_dmd_loss(x, g), dmd_surrogate_loss(x, g))
    torch.testing.assert_close(weighted_dmd_loss(x, g, 1.0, torch.ones(3, 2, 5)), dmd_surrogate_loss(x, g))


def test_weights_are_detached() -> None:
    x, g, w_intra = _setup(2)
    w_intra = w_intra.requires_grad_(True)
    w_inter = torch.tensor(1.7, requires_grad=True)
    weighted_dmd_loss(x, g, w_inter, w_intra).backward()
    assert w_intra.grad is None and w_inter.grad is None and x.grad is not None


def test_per_sample_weights_for_batches() -> None:
    gen = torch.Generator().manual_seed(3)
    shape = (2, 3, 4, 2, 2)
    x = torch.randn(shape, generator=gen).requires_grad_(True)
    g = torch.randn(shape, generator=gen, dtype=torch.float64)
    w_inter = torch.tensor([0.5, 2.0])
    w_intra = torch.rand(2, 3, 2, 2, generator=gen)
    weighted_dmd_loss(x, g, w_inter, w_intra).backward()
    expected = w_inter.double().view(2, 1, 1, 1, 1) * w_intra.double().unsqueeze(2) * g / x.numel()
    torch.testing.assert_close(x.grad.double(), expected)


def test_mask_restricts_mean_to_selected_frames() -> None:
    x, g, w_intra = _setup(4)
    mask = torch.tensor([False, True, True]).view(1, 3, 1, 1, 1)
    weighted_dmd_loss(x, g, 3.0, w_intra, mask).backward()
    n_sel = int(mask.expand(SHAPE).sum())
    expected = 3.0 * w_intra.double()[None, :, None] * g / n_sel
    expected = torch.where(mask.expand(SHAPE), expected, torch.zeros_like(expected))
    torch.testing.assert_close(x.grad.double(), expected)


def test_bad_weight_shapes_are_rejected() -> None:
    x, g, _ = _setup()
    with pytest.raises(ValueError, match="w_intra must be"):
        weighted_dmd_loss(x, g, 1.0, torch.ones(3, 4, 4))
    with pytest.raises(ValueError, match="w_inter must be"):
        weighted_dmd_loss(x, g, torch.ones(2), None)
    with pytest.raises(ValueError, match="selects no element"):
        weighted_dmd_loss(x, g, 1.0, None, torch.zeros(1, 3, 1, 1, 1, dtype=torch.bool))
