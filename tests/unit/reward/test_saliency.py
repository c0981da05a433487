"""Saliency spaces and the patch-order blob test (docs/method.md §3.2 item 4, §5 item 15)."""

from __future__ import annotations

import pytest
import torch

from stream_r1.reward.preprocess import RewardVideo, patchify
from stream_r1.reward.saliency import compute_saliency, sr1_naive_grid

T, H, W = 4, 112, 168  # 2 temporal patches, 8 x 12 patches of 14x14
GRID = (T // 2, H // 14, W // 14)


def _blob() -> torch.Tensor:
    """Pixel weights [T, 3, H, W]: a Gaussian blob off-centre, strongest in the second temporal patch."""
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    blob = torch.exp(-((yy - 30.0) ** 2 + (xx - 120.0) ** 2) / (2 * 12.0**2))
    time = torch.tensor([0.3, 0.3, 1.0, 1.0]).view(T, 1, 1, 1)
    return time * blob.expand(T, 3, H, W)


class SyntheticBlobReward:
    """A synthetic differentiable reward whose gradient is concentrated on a known pixel blob.

    logit_a = c_a * sum(B * X^2) computed from the *patchified* input, so the gradient wrt the patch rows
    is 2 c_a B_rows X_rows and the true per-patch saliency is the L2 norm of B over each 2x14x14 patch.
    """

    def __init__(self) -> None:
        self.weight_rows = patchify(_blob())

    def embed_video(self, pixel_values_videos: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        per_row = (self.weight_rows * pixel_values_videos**2).sum(dim=1)
        return per_row.reshape(-1, 4)  # 4 consecutive rows = one 2x2 merged token

    def logits_from_embeds(self, video_embeds: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        s = video_embeds.sum()
        return torch.stack([s, 2 * s, 3 * s])


def _video() -> RewardVideo:
    return RewardVideo(x=torch.ones(T, 3, H, W), frame_indices=tuple(range(T)), grid_thw=GRID)


def _true_patch_map() -> torch.Tensor:
    b = _blob()
    return b.reshape(GRID[0], 2, 3, GRID[1], 14, GRID[2], 14).pow(2).sum(dim=(1, 2, 4, 6)).sqrt()


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


def test_fixed_patch_order_recovers_blob_and_naive_is_scrambled() -> None:
    model, ids = SyntheticBlobReward(), torch.zeros(1, 1, dtype=torch.long)
    logits, fixed = compute_saliency(model, _video(), ids, space="patch_reference", patch_order="fixed")
    _, naive = compute_saliency(model, _video(), ids, space="patch_reference", patch_order="sr1_naive")
    true = _true_patch_map()
    assert logits.tolist() == pytest.approx([float((_blob()).sum()) * c for c in (1, 2, 3)], rel=1e-5)
    for axis, c in (("MQ", 2), ("VQ", 1), ("TA", 3)):
        assert _corr(fixed[axis], true) > 0.99
        torch.testing.assert_close(fixed[axis], 2 * c * true, rtol=1e-5, atol=1e-6)
        assert _corr(naive[axis], true) < 0.5  # SR1's map: the peak is moved
        assert fixed[axis].flatten().argmax() != naive[axis].flatten().argmax()
    # The naive layout is exactly SR1's: per-row L2, view(num_grid, 1).mean(1), view(t, h, w) on the flat index.
    pv = patchify(torch.ones(T, 3, H, W)).requires_grad_(True)
    logit = model.logits_from_embeds(model.embed_video(pv, torch.tensor([GRID])), ids)[1]
    (g,) = torch.autograd.grad(logit, pv)
    sr1 = g.norm(dim=-1)
    num_grid = GRID[0] * GRID[1] * GRID[2]
    sr1 = sr1.view(num_grid, sr1.numel() // num_grid).mean(dim=1).view(*GRID)
    assert torch.equal(naive["MQ"], sr1)
    assert torch.equal(sr1_naive_grid(g.norm(dim=-1), GRID), sr1)


def test_pixel_space_recovers_blob_per_pixel() -> None:
    model = SyntheticBlobReward()
    _, sal = compute_saliency(model, _video(), torch.zeros(1, 1, dtype=torch.long), metrics=("VQ",))
    expected = (2 * _blob()).norm(dim=1)  # d/dX sum(B X^2) = 2 B X with X = 1; L2 over RGB
    torch.testing.assert_close(sal["VQ"], expected, rtol=1e-5, atol=1e-6)


def test_embeds_space_and_argument_checks() -> None:
    model, ids = SyntheticBlobReward(), torch.zeros(1, 1, dtype=torch.long)
    _, sal = compute_saliency(model, _video(), ids, metrics=("TA",), space="embeds")
    assert sal["TA"].shape == (GRID[0], GRID[1] // 2, GRID[2] // 2)
    torch.testing.assert_close(sal["TA"], torch.full_like(sal["TA"], 6.0))  # |(3, 3, 3, 3)| = 6 per token
    with pytest.raises(ValueError, match="saliency_space"):
        compute_saliency(model, _video(), ids, space="latent")
    with pytest.raises(ValueError, match="metrics"):
        compute_saliency(model, _video(), ids, metrics=("MQ", "MQ"))
    with pytest.raises(ValueError, match="patch_order"):
        compute_saliency(model, _video(), ids, space="patch_reference", patch_order="zigzag")
