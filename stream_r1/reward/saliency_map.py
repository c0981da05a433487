"""Map reward saliency onto the latent grid ``[F, H, W]`` (docs/method.md §3.3-D).

Input maps live on one of three grids (see :mod:`stream_r1.reward.saliency`): scored pixel frames
``[T', Hr, Wr]`` (``pixel``), 14x14 patches ``[T'/2, Hr/14, Wr/14]`` (``patch_reference``) or merged
tokens ``[T'/2, Hr/28, Wr/28]`` (``embeds``). Space and time are mapped separately:

* spatial ``area`` (default): area pooling to (H, W) (``F.interpolate(mode="area")``: adaptive average
  pooling; each latent cell gets the mean saliency of the pixels it covers).
  ``trilinear_reference``: linear interpolation with ``align_corners=False`` (SR1).
* temporal ``vae_groups`` (default): Wan's VAE maps pixel frame 0 to latent 0 and frames 4k-3..4k to
  latent k; each latent frame gets the mean over the *scored* frames of its group (a temporal patch
  counts for both of its frames); a group with no scored frame (``fps2`` selection) takes the scored
  frame nearest to its centre. ``trilinear_reference``: linear interpolation over the map's own time
  axis (temporal patches for the patch grids), ``align_corners=False`` (SR1).

With both reference switches this equals SR1's single trilinear interpolation (linear interpolation is
separable), which the tests check.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stream_r1.reward.preprocess import TEMPORAL_PATCH_SIZE

SPATIAL_MAPPINGS = ("area", "trilinear_reference")
TEMPORAL_MAPPINGS = ("vae_groups", "trilinear_reference")
VAE_TEMPORAL_STRIDE = 4
"""Wan VAE temporal compression: latent k >= 1 covers pixel frames 4k-3 .. 4k."""


def vae_frame_groups(num_latent_frames: int) -> list[list[int]]:
    """Pixel frames of each latent frame: ``[[0], [1..4], [5..8], ...]``."""
    groups = [[0]]
    for k in range(1, num_latent_frames):
        groups.append(list(range(VAE_TEMPORAL_STRIDE * k - 3, VAE_TEMPORAL_STRIDE * k + 1)))
    return groups


def vae_group_matrix(frame_indices: tuple[int, ...], num_latent_frames: int) -> torch.Tensor:
    """Averaging matrix ``[F, T']`` from scored frames to latent frames (rows sum to 1).

    Args:
        frame_indices: Pixel index of each scored frame, increasing.
        num_latent_frames: F.

    Raises:
        ValueError: No scored frames, or indices beyond the ``4F-3`` frames of the latent video.
    """
    if not frame_indices:
        raise ValueError("no scored frames; cannot map saliency to latent frames")
    last = VAE_TEMPORAL_STRIDE * (num_latent_frames - 1)
    if max(frame_indices) > last or min(frame_indices) < 0:
        raise ValueError(
            f"scored frame indices {min(frame_indices)}..{max(frame_indices)} fall outside the {last + 1} pixel "
            f"frames of {num_latent_frames} latent frames (T = 4F - 3)"
        )
    pos = {f: i for i, f in enumerate(frame_indices)}
    m = torch.zeros(num_latent_frames, len(frame_indices), dtype=torch.float64)
    for k, group in enumerate(vae_frame_groups(num_latent_frames)):
        hits = [pos[f] for f in group if f in pos]
        if not hits:
            centre = (group[0] + group[-1]) / 2
            hits = [min(range(len(frame_indices)), key=lambda i: (abs(frame_indices[i] - centre), i))]
        for i in hits:
            m[k, i] = 1.0 / len(hits)
    return m


def _spatial(sal: torch.Tensor, hw: tuple[int, int], mode: str) -> torch.Tensor:
    x = sal.unsqueeze(1)  # [T, 1, h, w]
    if mode == "area":
        return F.interpolate(x, size=hw, mode="area").squeeze(1)
    if mode == "trilinear_reference":
        return F.interpolate(x, size=hw, mode="bilinear", align_corners=False).squeeze(1)
    raise ValueError(f"reward.spatial_mapping={mode!r}; allowed {SPATIAL_MAPPINGS}")


def saliency_to_latent(
    saliency: torch.Tensor,
    *,
    space: str,
    frame_indices: tuple[int, ...],
    latent_shape: tuple[int, int, int],
    spatial_mapping: str = "area",
    temporal_mapping: str = "vae_groups",
) -> torch.Tensor:
    """One axis' saliency map -> latent grid ``[F, H, W]`` (float32, detached).

    Args:
        saliency: ``[T', Hr, Wr]`` (pixel) or ``[T'/2, h, w]`` (patch_reference / embeds), non-negative.
        space: The saliency space the map came from.
        frame_indices: Pixel indices of the T' scored frames.
        latent_shape: ``(F, H, W)``.
        spatial_mapping: ``area`` | ``trilinear_reference``.
        temporal_mapping: ``vae_groups`` | ``trilinear_reference``.

    Raises:
        ValueError: Unknown mappings/space or a time axis that does not match ``frame_indices``.
    """
    f_lat, h_lat, w_lat = latent_shape
    per_frame = 1 if space == "pixel" else TEMPORAL_PATCH_SIZE
    if space not in ("pixel", "patch_reference", "embeds"):
        raise ValueError(f"reward.saliency_space={space!r}; allowed pixel, patch_reference, embeds")
    if saliency.ndim != 3 or saliency.shape[0] * per_frame != len(frame_indices):
        raise ValueError(f"{space} saliency {tuple(saliency.shape)} does not match {len(frame_indices)} scored frames")
    s = _spatial(saliency.detach().to(torch.float64), (h_lat, w_lat), spatial_mapping)  # [t, H, W]
    if temporal_mapping == "vae_groups":
        frames = s.repeat_interleave(per_frame, dim=0)  # a temporal patch covers both of its frames
        m = vae_group_matrix(frame_indices, f_lat).to(frames.device)
        out = torch.einsum("ft,thw->fhw", m, frames)
    elif temporal_mapping == "trilinear_reference":
        x = s.permute(1, 2, 0).reshape(1, h_lat * w_lat, -1)  # time last for 1-D linear interpolation
        out = F.interpolate(x, size=f_lat, mode="linear", align_corners=False)
        out = out.reshape(h_lat, w_lat, f_lat).permute(2, 0, 1)
    else:
        raise ValueError(f"reward.temporal_mapping={temporal_mapping!r}; allowed {TEMPORAL_MAPPINGS}")
    return out.to(torch.float32).contiguous()


def latent_saliency_maps(
    maps: dict[str, torch.Tensor],
    *,
    space: str,
    frame_indices: tuple[int, ...],
    latent_shape: tuple[int, int, int],
    spatial_mapping: str = "area",
    temporal_mapping: str = "vae_groups",
) -> dict[str, torch.Tensor]:
    """:func:`saliency_to_latent` for every axis, keeping the dict order (the fusion order)."""
    return {
        a: saliency_to_latent(
            s,
            space=space,
            frame_indices=frame_indices,
            latent_shape=latent_shape,
            spatial_mapping=spatial_mapping,
            temporal_mapping=temporal_mapping,
        )
        for a, s in maps.items()
    }
