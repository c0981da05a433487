"""The shapes world: one coloured shape moving in a straight line on black, rendered from a seed.

A video is fully described by a :class:`Scene` (colour, shape, direction, start position, speed,
size) and a :class:`Degradation` (blur, jitter, colour drift). Rendering is pure torch, supersampled
for anti-aliased edges, and deterministic: the same ``(prompt, seed, frames, size)`` always gives the
same pixels. Prompts follow one fixed grammar, ``a {color} {shape} moving {direction}``.

Pixel videos are ``[T, 3, H, W]`` float32 in ``[-1, 1]`` (black = -1), the project's pixel layout
(docs/design.md "One latent layout") without the batch axis.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from itertools import product

import torch

from stream_r1.utils.seeding import make_rng

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
}
"""Saturated RGB colours in [0, 1]."""
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
}
"""Unit motion vectors ``(dx, dy)`` in image coordinates (y grows downwards)."""

RADIUS_FRAC = 0.16
"""Object half-size as a fraction of the frame side."""
TRAVEL_FRAC = 0.40
"""Distance covered over a whole video, as a fraction of the frame side (any number of frames)."""
EDGE_MARGIN = 0.07
"""Free border (fraction of the side) around the object's path: wider than the largest jitter offset."""
SUPERSAMPLE = 4
"""Sub-pixel samples per axis used for anti-aliased edges."""

_PROMPT = re.compile(r"^a (?P<color>\w+) (?P<shape>\w+) moving (?P<direction>\w+)$")


@dataclass(frozen=True, slots=True)
class Degradation:
    """How a rendered video is spoilt (all zero = clean).

    Attributes:
        blur_sigma: Gaussian blur standard deviation as a fraction of the frame side.
        jitter: Per-frame random offset of the object (fraction of the side, uniform in [-j, j]).
        color_drift: How far the colour moves towards another palette colour by the last frame (0..1).
    """

    blur_sigma: float = 0.0
    jitter: float = 0.0
    color_drift: float = 0.0

    @property
    def clean(self) -> bool:
        """True when nothing is spoilt."""
        return self.blur_sigma == 0 and self.jitter == 0 and self.color_drift == 0


DEGRADATIONS: dict[str, Degradation] = {
    "clean": Degradation(),
    "blur": Degradation(blur_sigma=0.035),
    "jitter": Degradation(jitter=0.06),
    "drift": Degradation(color_drift=0.75),
}
"""The named modes the teacher's training set mixes (strengths chosen so each is plainly visible)."""


@dataclass(frozen=True, slots=True)
class Scene:
    """Everything that determines one clean video.

    Attributes:
        color, shape, direction: The prompt's three attributes.
        start: Object centre in the first frame, ``(x, y)`` as fractions of the side.
        drift_to: Palette colour a ``color_drift`` degradation moves towards.
    """

    color: str
    shape: str
    direction: str
    start: tuple[float, float]
    drift_to: str

    @property
    def prompt(self) -> str:
        """``a {color} {shape} moving {direction}``."""
        return make_prompt(self.color, self.shape, self.direction)


def make_prompt(color: str, shape: str, direction: str) -> str:
    """The world's one prompt grammar."""
    return f"a {color} {shape} moving {direction}"


def parse_prompt(prompt: str) -> tuple[str, str, str]:
    """``(color, shape, direction)`` of a world prompt.

    Raises:
        ValueError: ``prompt`` does not follow ``a {color} {shape} moving {direction}`` with known words.
    """
    m = _PROMPT.match(prompt.strip())
    if not m or m["color"] not in COLORS or m["shape"] not in SHAPES or m["direction"] not in DIRECTIONS:
        raise ValueError(
            f"prompt {prompt!r} is not a shapes-world prompt; use 'a {{color}} {{shape}} moving {{direction}}' "
            f"with color in {sorted(COLORS)}, shape in {list(SHAPES)}, direction in {list(DIRECTIONS)}"
        )
    return m["color"], m["shape"], m["direction"]


def all_prompts() -> list[str]:
    """Every prompt of the world (4 colours x 3 shapes x 4 directions = 48), in a fixed order."""
    return [make_prompt(c, s, d) for c, s, d in product(COLORS, SHAPES, DIRECTIONS)]


def is_held_out(prompt: str) -> bool:
    """Held-out split: combinations with (colour + shape + direction index) % 4 == 0.

    Every single colour, shape and direction still occurs in training; only these 12 combinations
    are unseen, so held-out accuracy measures compositional generalisation.
    """
    c, s, d = parse_prompt(prompt)
    return (list(COLORS).index(c) + SHAPES.index(s) + list(DIRECTIONS).index(d)) % 4 == 0


def split_prompts() -> tuple[list[str], list[str]]:
    """``(train, held_out)`` prompt lists (36 and 12)."""
    prompts = all_prompts()
    return [p for p in prompts if not is_held_out(p)], [p for p in prompts if is_held_out(p)]


HELD_OUT_SEED_BASE = 1_000_000
"""Held-out videos use seeds >= this; training videos use seeds below it."""


def sample_scene(prompt: str, seed: int) -> Scene:
    """The scene of ``prompt`` for ``seed``: a start position that keeps the whole path inside the frame."""
    color, shape, direction = parse_prompt(prompt)
    g = make_rng(seed, "scene", prompt)
    u = torch.rand(3, generator=g).tolist()
    dx, dy = DIRECTIONS[direction]
    lo, hi = RADIUS_FRAC + EDGE_MARGIN, 1.0 - RADIUS_FRAC - EDGE_MARGIN
    # Along the motion axis the start leaves room for the whole travel; across it any position inside.
    along = lo + u[0] * (hi - lo - TRAVEL_FRAC)
    across = lo + u[1] * (hi - lo)
    if dx:
        x = along if dx > 0 else 1.0 - along
        start = (x, across)
    else:
        y = along if dy > 0 else 1.0 - along
        start = (across, y)
    others = [c for c in COLORS if c != color]
    return Scene(color, shape, direction, start, others[min(int(u[2] * len(others)), len(others) - 1)])


def _shape_mask(
    shape: str, xs: torch.Tensor, ys: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, r: float
) -> torch.Tensor:
    """Coverage {0, 1} of ``shape`` centred at ``(cx, cy)`` [T, 1, 1] on sample grids ``xs, ys`` [1, S, S]."""
    px, py = xs - cx, ys - cy
    if shape == "circle":
        return (px * px + py * py <= r * r).float()
    if shape == "square":
        h = r * 0.85  # same area scale as the circle (pi r^2 ~ (1.77 r)^2)
        return ((px.abs() <= h) & (py.abs() <= h)).float()
    # Upward isosceles triangle: apex at (0, -r), base from (-r, 0.8r) to (r, 0.8r).
    top, bottom = -r, 0.8 * r
    frac = (py - top) / (bottom - top)
    return ((py >= top) & (py <= bottom) & (px.abs() <= frac * r)).float()


def _gaussian_blur(video: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[T, 3, H, W]`` with zero (black) padding."""
    radius = max(1, math.ceil(3 * sigma_px))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x * x) / (2 * sigma_px * sigma_px))
    k = k / k.sum()
    t, c, h, w = video.shape
    flat = video.reshape(t * c, 1, h, w)
    flat = torch.nn.functional.conv2d(flat, k.view(1, 1, 1, -1), padding=(0, radius))
    flat = torch.nn.functional.conv2d(flat, k.view(1, 1, -1, 1), padding=(radius, 0))
    return flat.reshape(t, c, h, w)


def centres(scene: Scene, num_frames: int, degradation: Degradation, seed: int) -> torch.Tensor:
    """Object centres ``[T, 2]`` (x, y as fractions of the side): straight-line motion plus jitter."""
    dx, dy = DIRECTIONS[scene.direction]
    s = torch.linspace(0.0, 1.0, num_frames) if num_frames > 1 else torch.zeros(1)
    path = torch.stack([scene.start[0] + dx * TRAVEL_FRAC * s, scene.start[1] + dy * TRAVEL_FRAC * s], dim=1)
    if degradation.jitter:
        g = make_rng(seed, "jitter", scene.prompt)
        path = path + (torch.rand(num_frames, 2, generator=g) * 2 - 1) * degradation.jitter
    return path


def render_scene(
    scene: Scene, num_frames: int, size: int, degradation: Degradation = Degradation(), seed: int = 0
) -> torch.Tensor:
    """Pixels ``[T, 3, size, size]`` in [-1, 1] of ``scene`` under ``degradation``.

    Args:
        scene: What to draw.
        num_frames: Frames T (>= 1).
        size: Frame side in pixels.
        degradation: Spoilers to apply.
        seed: Seed of the jitter offsets.
    """
    if num_frames < 1 or size < 8:
        raise ValueError(f"num_frames={num_frames}, size={size}: need num_frames >= 1 and size >= 8")
    n = size * SUPERSAMPLE
    grid = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    ys, xs = grid.view(1, n, 1), grid.view(1, 1, n)
    c = centres(scene, num_frames, degradation, seed)
    cover = _shape_mask(scene.shape, xs, ys, c[:, 0].view(-1, 1, 1), c[:, 1].view(-1, 1, 1), RADIUS_FRAC)
    cover = torch.nn.functional.avg_pool2d(cover.unsqueeze(1), SUPERSAMPLE).squeeze(1)  # [T, H, W] in [0, 1]
    rgb = torch.tensor(COLORS[scene.color]).view(1, 3)
    if degradation.color_drift:
        target = torch.tensor(COLORS[scene.drift_to]).view(1, 3)
        a = (torch.linspace(0.0, 1.0, num_frames) if num_frames > 1 else torch.zeros(1)).view(-1, 1)
        rgb = rgb + degradation.color_drift * a * (target - rgb)
    else:
        rgb = rgb.expand(num_frames, 3)
    video = cover.unsqueeze(1) * rgb.view(num_frames, 3, 1, 1)
    if degradation.blur_sigma:
        video = _gaussian_blur(video, degradation.blur_sigma * size)
    return (video.clamp(0.0, 1.0) * 2 - 1).contiguous()


def render(prompt: str, seed: int, num_frames: int, size: int, mode: str = "clean") -> torch.Tensor:
    """Render ``prompt`` with ``seed`` in a named mode of :data:`DEGRADATIONS` (``[T, 3, size, size]``).

    Raises:
        ValueError: Unknown prompt or mode.
    """
    if mode not in DEGRADATIONS:
        raise ValueError(f"mode={mode!r} is not one of {list(DEGRADATIONS)}")
    return render_scene(sample_scene(prompt, seed), num_frames, size, DEGRADATIONS[mode], seed)


def scaled(d: Degradation, strength: float) -> Degradation:
    """``d`` with every spoiler multiplied by ``strength`` (graded labels for the reward model)."""
    return replace(
        d,
        blur_sigma=d.blur_sigma * strength,
        jitter=d.jitter * strength,
        color_drift=min(1.0, d.color_drift * strength),
    )
