"""Images for TensorBoard review: the W_intra temporal profile, saliency heat maps, rollout clips."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stream_r1.config.derived import last_pixel_frame


def video_to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """Pixels ``[T, 3, H, W]`` in [-1, 1] -> ``[T, H, W, 3]`` uint8."""
    x = ((pixels.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def temporal_profile_image(profile: torch.Tensor, title: str = "W_intra temporal profile") -> np.ndarray:
    """A line plot of per-latent-frame weights ``[F]`` as an ``[H, W, 3]`` uint8 image."""
    fig = Figure(figsize=(4, 2.5), dpi=80)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    values = profile.detach().float().cpu().numpy()
    ax.plot(np.arange(len(values)), values, marker="o")
    ax.set_xlabel("latent frame")
    ax.set_ylabel("tau_f")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def heatmap_grid(pixels: torch.Tensor, weights: torch.Tensor, alpha: float = 0.5) -> np.ndarray:
    """Per-latent-frame W_intra maps over the decoded frames, tiled in one row.

    Args:
        pixels: Decoded rollout ``[T, 3, Hp, Wp]`` in [-1, 1].
        weights: ``[F, H, W]`` weights on the latent grid.
        alpha: Heat-map opacity.

    Returns:
        ``[Hp, F * Wp, 3]`` uint8 image.
    """
    frames = video_to_uint8(pixels).astype(np.float32) / 255.0
    w = weights.detach().float().cpu()
    hp, wp = frames.shape[1:3]
    up = torch.nn.functional.interpolate(w[:, None], size=(hp, wp), mode="nearest")[:, 0].numpy()
    lo, hi = float(up.min()), float(up.max())
    norm = (up - lo) / (hi - lo) if hi - lo > 1e-12 else np.zeros_like(up)
    cmap = colormaps["inferno"]
    tiles = []
    for f in range(w.shape[0]):
        base = frames[min(last_pixel_frame(f), len(frames) - 1)]
        heat = cmap(norm[f])[..., :3]
        tiles.append((1 - alpha) * base + alpha * heat)
    return (np.concatenate(tiles, axis=1) * 255).round().astype(np.uint8)
