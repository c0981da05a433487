"""Ground-truth detectors of the shapes world: what a video shows, read from its pixels alone.

No model is involved: every measurement is geometry on the frames ``[T, 3, H, W]`` in [-1, 1].

* colour: mean chroma of the object's bright pixels, nearest palette colour;
* shape: two brightness-weighted moments of the object: vertical skewness (the upright triangle is
  the only asymmetric shape) and ``E[x^2 y^2] / (E[x^2] E[y^2])`` (1 for a square, whose x and y are
  independent, 2/3 for a disc); both are sub-pixel accurate and survive blur, which only adds an
  independent isotropic Gaussian;
* direction: centroid displacement between the first and last quarter of the video;
* motion smoothness: RMS residual of the centroid path from a constant-velocity line;
* sharpness: the steepest edge gradients relative to the object's brightness;
* colour stability: chroma change between the first and last quarter.

:func:`measure` returns the raw numbers; :mod:`stream_r1.shapes.metrics` turns them into scores.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from stream_r1.shapes.world import COLORS, DIRECTIONS, TRAVEL_FRAC

PRESENT_THRESHOLD = 0.25
"""Brightness (max channel, [0, 1]) a pixel needs to count as object."""
TRIANGLE_SKEW = 0.2
"""|vertical skewness| above this = triangle (triangles measure 0.39-0.61 clean or blurred, others < 0.04)."""
SQUARE_CROSS = 0.83
"""Cross moment above this = square (squares 0.93-1.0 clean or blurred, discs 0.66-0.73)."""
MIN_TRAVEL = 0.5 * TRAVEL_FRAC
"""A video 'moves' when its centroid covers at least half the world's travel (fraction of the side)."""


@dataclass(frozen=True, slots=True)
class Measurement:
    """Raw detector outputs for one video (distances are fractions of the frame side).

    Attributes:
        present: Fraction of frames where an object was found.
        color: Nearest palette colour ("" when absent).
        shape: Shape class from the fill ratio ("" when absent).
        direction: Direction of the displacement ("" when it is shorter than :data:`MIN_TRAVEL`).
        skew: Median vertical skewness of the object's brightness.
        cross: Median ``E[x^2 y^2] / (E[x^2] E[y^2])`` of the object's brightness.
        travel: Length of the centroid displacement.
        path_rms: RMS deviation of the centroid from a constant-velocity fit.
        sharpness: Mean of the steepest edge gradients / object brightness (1 = one-pixel edge).
        color_shift: Chroma distance between the first and last quarter.
    """

    present: float
    color: str
    shape: str
    direction: str
    skew: float
    cross: float
    travel: float
    path_rms: float
    sharpness: float
    color_shift: float

    def to_dict(self) -> dict[str, float | str]:
        """Plain dict (JSON-ready)."""
        return asdict(self)


def _unit(frames: torch.Tensor) -> torch.Tensor:
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be [T, 3, H, W], got {tuple(frames.shape)}")
    return ((frames.detach().float().cpu() + 1) / 2).clamp(0, 1)


def object_mask(frames: torch.Tensor) -> torch.Tensor:
    """Boolean object mask ``[T, H, W]`` (max channel above :data:`PRESENT_THRESHOLD`)."""
    return _unit(frames).amax(dim=1) > PRESENT_THRESHOLD


def _chroma(rgb: torch.Tensor) -> torch.Tensor:
    """Brightness-normalised colour (max channel = 1) so blur or dimming does not change the hue."""
    return rgb / rgb.amax(dim=-1, keepdim=True).clamp_min(1e-6)


def _nearest_color(chroma: torch.Tensor) -> str:
    names = list(COLORS)
    palette = torch.tensor([COLORS[n] for n in names])
    return names[int((palette - chroma.view(1, 3)).norm(dim=1).argmin())]


def _shape_of(skew: float, cross: float) -> str:
    if abs(skew) > TRIANGLE_SKEW:
        return "triangle"
    return "square" if cross > SQUARE_CROSS else "circle"


def _shape_moments(weight: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame vertical skewness and cross moment ``[T]`` of brightness weights ``[T, H, W]``.

    ``x`` and ``y`` are the per-frame centred coordinates ``[T, H, W]``.
    """
    mass = weight.flatten(1).sum(dim=1).clamp_min(1e-6)

    def mean(f: torch.Tensor) -> torch.Tensor:
        return (weight * f).flatten(1).sum(dim=1) / mass

    ex2, ey2 = mean(x * x).clamp_min(1e-9), mean(y * y).clamp_min(1e-9)
    return mean(y**3) / ey2**1.5, mean(x * x * y * y) / (ex2 * ey2)


def _sharpness(intensity: torch.Tensor) -> torch.Tensor:
    """Per-frame mean of the top edge gradients (one object perimeter's worth) over the peak ``[T]``."""
    gx = intensity[:, :, 1:] - intensity[:, :, :-1]
    gy = intensity[:, 1:, :] - intensity[:, :-1, :]
    g = torch.sqrt(gx[:, :-1, :] ** 2 + gy[:, :, :-1] ** 2).flatten(1)
    side = intensity.shape[-1]
    k = max(4, int(2 * math.pi * 0.16 * side))  # about the perimeter of the object in pixels
    top = g.topk(min(k, g.shape[1]), dim=1).values.mean(dim=1)
    return top / intensity.flatten(1).amax(dim=1).clamp_min(1e-6)


def measure(frames: torch.Tensor, weight_threshold: float = PRESENT_THRESHOLD) -> Measurement:
    """Run every detector on one video ``[T, 3, H, W]`` in [-1, 1].

    Raises:
        ValueError: ``frames`` is not ``[T, 3, H, W]``.
    """
    v = _unit(frames)
    t, _, h, w = v.shape
    intensity = v.amax(dim=1)  # [T, H, W]
    weight = (intensity - weight_threshold).clamp_min(0)
    mass = weight.flatten(1).sum(dim=1)
    found = mass > 0.5  # at least about one strongly lit pixel
    present = float(found.float().mean())
    if present < 0.5:
        return Measurement(present, "", "", "", float("nan"), float("nan"), 0.0, float("nan"), 0.0, float("nan"))
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    cx = (weight.sum(dim=1) * xs).sum(dim=1) / mass.clamp_min(1e-6)
    cy = (weight.sum(dim=2) * ys).sum(dim=1) / mass.clamp_min(1e-6)
    idx = found.nonzero().flatten()
    path = torch.stack([cx[idx], cy[idx]], dim=1)  # [T', 2]
    q = max(1, len(idx) // 4)
    disp = path[-q:].mean(dim=0) - path[:q].mean(dim=0)
    travel = float(disp.norm())
    direction = ""
    if travel >= MIN_TRAVEL:
        names = list(DIRECTIONS)
        dots = torch.tensor([disp[0] * DIRECTIONS[n][0] + disp[1] * DIRECTIONS[n][1] for n in names])
        direction = names[int(dots.argmax())]
    if len(idx) >= 3:
        # The least-squares line in closed form, in float64: LAPACK's lstsq (MKL) gave results that differed in
        # the 7th digit from one process to the next on the same frames, so labels and builds were not
        # reproducible from a seed.
        s = idx.double() - idx.double().mean()
        centred = path.double() - path.double().mean(dim=0)
        slope = (s.view(-1, 1) * centred).sum(dim=0) / (s**2).sum()
        rms = float(((centred - s.view(-1, 1) * slope) ** 2).sum(dim=1).mean().sqrt())
    else:
        rms = 0.0
    bright = (intensity > 0.5 * intensity.flatten(1).amax(dim=1).view(-1, 1, 1)) & found.view(-1, 1, 1)
    rgb_per_frame = torch.stack(
        [(v[i].permute(1, 2, 0)[bright[i]]).mean(dim=0) if bright[i].any() else torch.zeros(3) for i in range(t)]
    )[idx]
    chroma = _chroma(rgb_per_frame)
    shift = float((chroma[-q:].mean(dim=0) - chroma[:q].mean(dim=0)).norm())
    color = _nearest_color(_chroma(rgb_per_frame.mean(dim=0, keepdim=True)))
    wx = xs.view(1, 1, w) - cx[idx].view(-1, 1, 1)
    wy = ys.view(1, h, 1) - cy[idx].view(-1, 1, 1)
    skew_t, cross_t = _shape_moments(weight[idx], wx, wy)
    skew, cross = float(skew_t.median()), float(cross_t.median())
    sharp = float(_sharpness(intensity[idx]).median())
    return Measurement(present, color, _shape_of(skew, cross), direction, skew, cross, travel, rms, sharp, shift)
