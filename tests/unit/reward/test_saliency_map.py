"""Saliency -> latent grid: VAE frame groups, area pooling, and SR1's trilinear reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stream_r1.reward.saliency_map import saliency_to_latent, vae_frame_groups, vae_group_matrix


def test_vae_groups_all_even_drops_last_frame() -> None:
    assert vae_frame_groups(3) == [[0], [1, 2, 3, 4], [5, 6, 7, 8]]
    m = vae_group_matrix(tuple(range(20)), 6)  # T = 21 pixel frames, frame 20 dropped by all_even
    assert m.shape == (6, 20)
    assert m[0].tolist() == [1.0] + [0.0] * 19
    assert m[1, 1:5].tolist() == [0.25] * 4
    assert m[5, 17:20].tolist() == pytest.approx([1 / 3] * 3) and float(m[5].sum()) == pytest.approx(1.0)


def test_vae_groups_fps2_nearest_scored_frame() -> None:
    # Scored frames 0, 7, 13, 20 of 21; groups [0] [1-4] [5-8] [9-12] [13-16] [17-20].
    m = vae_group_matrix((0, 7, 13, 20), 6)
    picks = [int(row.argmax()) for row in m]
    assert picks == [0, 0, 1, 2, 2, 3]  # [1-4] -> frame 0 (centre 2.5); [9-12] -> frame 13 (centre 10.5)
    assert torch.equal(m.sum(1), torch.ones(6, dtype=torch.float64))
    with pytest.raises(ValueError, match="outside"):
        vae_group_matrix((0, 24), 6)


def test_pixel_map_area_and_groups() -> None:
    g = torch.Generator().manual_seed(0)
    sal = torch.rand(8, 56, 84, generator=g)  # 8 scored frames of a 9-frame (F=3) video
    out = saliency_to_latent(sal, space="pixel", frame_indices=tuple(range(8)), latent_shape=(3, 4, 6))
    assert out.shape == (3, 4, 6) and out.dtype == torch.float32
    pooled = sal.reshape(8, 4, 14, 6, 14).mean(dim=(2, 4))  # area pooling = mean of each 14x14 block
    torch.testing.assert_close(out[0], pooled[0])
    torch.testing.assert_close(out[1], pooled[1:5].mean(0))
    torch.testing.assert_close(out[2], pooled[5:8].mean(0))  # frame 8 was not scored


def test_patch_map_groups_count_both_frames_of_a_temporal_patch() -> None:
    sal = torch.arange(4, dtype=torch.float32).view(4, 1, 1).expand(4, 2, 2)  # 4 temporal patches = 8 frames
    out = saliency_to_latent(sal, space="patch_reference", frame_indices=tuple(range(8)), latent_shape=(3, 2, 2))
    # frames (0,1)->0, (2,3)->1, (4,5)->2, (6,7)->3; latent1 = frames 1..4 = (0,1,1,2)/4; latent2 = 5..7 = (2,3,3)/3.
    assert out[:, 0, 0].tolist() == pytest.approx([0.0, 1.0, 8 / 3])


def test_both_reference_switches_equal_sr1_trilinear() -> None:
    sal = torch.rand(5, 6, 10, generator=torch.Generator().manual_seed(3))  # SR1 patch grid (t, h, w)
    ours = saliency_to_latent(
        sal,
        space="patch_reference",
        frame_indices=tuple(range(10)),
        latent_shape=(4, 9, 13),
        spatial_mapping="trilinear_reference",
        temporal_mapping="trilinear_reference",
    )
    sr1 = F.interpolate(sal[None, None], size=(4, 9, 13), mode="trilinear", align_corners=False)[0, 0]
    torch.testing.assert_close(ours, sr1, rtol=1e-5, atol=1e-6)


def test_mapping_errors() -> None:
    sal = torch.rand(4, 28, 28)
    with pytest.raises(ValueError, match="does not match"):
        saliency_to_latent(sal, space="pixel", frame_indices=(0, 1), latent_shape=(2, 2, 2))
    with pytest.raises(ValueError, match="spatial_mapping"):
        saliency_to_latent(sal, space="pixel", frame_indices=(0, 1, 2, 3), latent_shape=(2, 2, 2), spatial_mapping="x")
    with pytest.raises(ValueError, match="temporal_mapping"):
        saliency_to_latent(sal, space="pixel", frame_indices=(0, 1, 2, 3), latent_shape=(2, 2, 2), temporal_mapping="x")
