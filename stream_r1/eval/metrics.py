"""In-house video metrics that need no downloaded weights (VBench's model-based dimensions download weights at run time).

All functions take decoded videos ``frames [T, H, W, 3]`` uint8 RGB in [0, 255] (what
``stream_r1.eval.video_io.read_video`` returns) and work pair-by-pair or chunk-by-chunk so a 60 s
832x480 video (961 frames, ~1.2 GB as uint8) never becomes one float array.

Temporal flickering is VBench's definition (``vbench/temporal_flickering.py``): for consecutive
frames the mean absolute difference over all pixels and channels in [0, 255] space
(``cv2.absdiff`` on float32 frames), averaged over the pairs of a video, and the video scores
``(255 - mean) / 255``. VBench runs it on its ``temporal_flickering`` prompts, which ask for static
scenes ("In a still frame, ..."); VBench-Long additionally drops clips that a RAFT-based static
filter finds dynamic. We implement the per-video score only (no static filter — it would need RAFT
weights); on free-form prompts it therefore mixes real motion into the score, which is why
``motion_score`` is reported beside it. VBench decodes with OpenCV (BGR) and we with ffmpeg (RGB):
the channel order does not change the mean; colour conversion may differ by a rounding step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

# ITU-R BT.601 luma, the weights cv2.COLOR_RGB2GRAY uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
MOVING_PIXEL_THRESHOLD = 10.0
"""A pixel 'moves' between two frames when its largest channel change exceeds this (0-255 units)."""


def _check_frames(frames: np.ndarray, min_frames: int = 1) -> np.ndarray:
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = getattr(frames, "shape", None)
        raise ValueError(f"frames must be a numpy array [T, H, W, 3] (uint8 RGB), got shape {shape}")
    if frames.shape[0] < min_frames:
        raise ValueError(f"this metric needs at least {min_frames} frames, the video has {frames.shape[0]}")
    return frames


def _absdiff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``|a - b|`` elementwise: exact and without widening for uint8 (as ``cv2.absdiff``)."""
    if a.dtype == np.uint8 and b.dtype == np.uint8:
        return np.maximum(a, b) - np.minimum(a, b)
    return np.abs(a.astype(np.float32) - b.astype(np.float32))


def _pair_stats(frames: np.ndarray, threshold: float = MOVING_PIXEL_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """One pass over consecutive frame pairs: (MAE in [0, 255] units, moving-pixel fraction), each ``[T - 1]``."""
    frames = _check_frames(frames, 2)
    mae = np.empty(frames.shape[0] - 1, dtype=np.float64)
    moving = np.empty(frames.shape[0] - 1, dtype=np.float64)
    for t in range(1, frames.shape[0]):
        d = _absdiff(frames[t], frames[t - 1])
        mae[t - 1] = float(d.sum(dtype=np.uint64 if d.dtype == np.uint8 else np.float64)) / d.size
        largest = np.maximum(np.maximum(d[..., 0], d[..., 1]), d[..., 2])
        moving[t - 1] = float(np.count_nonzero(largest > threshold)) / largest.size
    return mae, moving


def consecutive_frame_mae(frames: np.ndarray) -> np.ndarray:
    """Mean absolute difference of each consecutive frame pair, in [0, 255] units.

    Args:
        frames: ``[T, H, W, 3]`` uint8 (or float in [0, 255]).

    Returns:
        ``[T - 1]`` float64: ``mean |f_{t+1} - f_t|`` over all pixels and channels.
    """
    return _pair_stats(frames)[0]


def temporal_flickering(frames: np.ndarray) -> float:
    """VBench temporal flickering of one video: ``(255 - mean_t MAE(f_t, f_{t+1})) / 255`` in [0, 1].

    1.0 for a static video; 0.0 when every pixel alternates between 0 and 255.
    """
    return (255.0 - float(consecutive_frame_mae(frames).mean())) / 255.0


def motion_score(frames: np.ndarray) -> float:
    """Mean consecutive-frame MAE scaled to [0, 1] (``1 - temporal_flickering``): 0 = frozen video."""
    return float(consecutive_frame_mae(frames).mean()) / 255.0


def moving_pixel_fraction(frames: np.ndarray, threshold: float = MOVING_PIXEL_THRESHOLD) -> float:
    """Fraction of pixels whose largest channel change between consecutive frames exceeds ``threshold``.

    A dynamics measure that ignores low-amplitude noise (a cheap stand-in for VBench's RAFT-based
    dynamic degree, which needs downloaded weights). Averaged over the frame pairs; in [0, 1].
    """
    return float(_pair_stats(frames, threshold)[1].mean())


def chunk_bounds(num_frames: int, chunk_frames: int, first_chunk_frames: int | None = None) -> list[tuple[int, int]]:
    """``[start, end)`` pixel-frame ranges of the generation chunks.

    A streaming Wan student decodes ``frames_per_block`` latent frames per chunk: the first chunk
    has ``1 + 4 (fpb - 1)`` pixel frames, later ones ``4 fpb`` (design.md latent layout). A shorter
    last chunk is kept.
    """
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    first = chunk_frames if first_chunk_frames is None else first_chunk_frames
    if first < 1:
        raise ValueError(f"first_chunk_frames must be >= 1, got {first_chunk_frames}")
    bounds, start, size = [], 0, first
    while start < num_frames:
        end = min(start + size, num_frames)
        bounds.append((start, end))
        start, size = end, chunk_frames
    return bounds


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of a ``[H, W]`` luma image (cv2.Laplacian ksize=1, valid part).

    The usual no-reference sharpness/focus measure: blur and detail loss lower it.
    """
    if gray.shape[0] < 3 or gray.shape[1] < 3:
        return 0.0
    g = gray.astype(np.float32)
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var(dtype=np.float64))


def frame_stats(frame: np.ndarray) -> dict[str, float]:
    """Brightness (luma/255), mean R/G/B (/255), HSV saturation and Laplacian sharpness of one frame.

    Channel-sliced arithmetic on uint8 where exact (max/min/sums): ~4x faster than one float32 copy
    of the frame, which matters for 60 s videos (961 frames of 832x480).
    """
    r, g, b = frame[..., 0], frame[..., 1], frame[..., 2]
    gray = _LUMA[0] * r.astype(np.float32) + _LUMA[1] * g.astype(np.float32) + _LUMA[2] * b.astype(np.float32)
    cmax = np.maximum(np.maximum(r, g), b)
    cmin = np.minimum(np.minimum(r, g), b)
    # HSV saturation (max - min) / max, 0 for black pixels (max = 0 implies max - min = 0).
    sat = (cmax - cmin).astype(np.float32) / np.maximum(cmax, 1).astype(np.float32)
    acc = np.uint64 if frame.dtype == np.uint8 else np.float64
    n = r.size
    return {
        "brightness": float(gray.mean(dtype=np.float64)) / 255.0,
        "red": float(r.sum(dtype=acc)) / n / 255.0,
        "green": float(g.sum(dtype=acc)) / n / 255.0,
        "blue": float(b.sum(dtype=acc)) / n / 255.0,
        "saturation": float(sat.mean(dtype=np.float64)),
        "sharpness": laplacian_variance(gray),
    }


CHUNK_STATS = ("brightness", "red", "green", "blue", "saturation", "sharpness")


def chunk_stats(frames: np.ndarray, bounds: list[tuple[int, int]]) -> dict[str, list[float]]:
    """Per-chunk means of :func:`frame_stats`: ``{stat: [value per chunk]}`` for ``CHUNK_STATS``."""
    frames = _check_frames(frames, 1)
    out: dict[str, list[float]] = {k: [] for k in CHUNK_STATS}
    for start, end in bounds:
        per_frame = [frame_stats(frames[t]) for t in range(start, end)]
        for k in CHUNK_STATS:
            out[k].append(float(np.mean([s[k] for s in per_frame])))
    return out


def drift(stats: dict[str, list[float]]) -> dict[str, float]:
    """Change from the first chunks to the last (error accumulation in long videos).

    Head = mean over the first ``ceil(n/4)`` chunks, tail = mean over the last ``ceil(n/4)``.

    Returns:
        ``drift_brightness`` and ``drift_saturation``: tail - head (signed, [0,1] units);
        ``drift_color``: Euclidean distance of the mean RGB (/255) between head and tail;
        ``drift_sharpness``: tail / head - 1 (relative; -0.5 = lost half the Laplacian variance).
        All 0 for a single-chunk video.
    """
    n = len(stats["brightness"])
    if n == 0:
        raise ValueError("drift needs at least one chunk")
    k = max(1, math.ceil(n / 4))

    def head(key: str) -> float:
        return float(np.mean(stats[key][:k]))

    def tail(key: str) -> float:
        return float(np.mean(stats[key][-k:]))

    rgb_delta = [tail(c) - head(c) for c in ("red", "green", "blue")]
    h_sharp, t_sharp = head("sharpness"), tail("sharpness")
    return {
        "drift_brightness": tail("brightness") - head("brightness"),
        "drift_saturation": tail("saturation") - head("saturation"),
        "drift_color": float(np.sqrt(np.sum(np.square(rgb_delta)))),
        "drift_sharpness": 0.0 if h_sharp <= 1e-9 and t_sharp <= 1e-9 else t_sharp / max(h_sharp, 1e-9) - 1.0,
    }


@dataclass
class VideoMetrics:
    """Every in-house metric of one video (scalars are what metrics.json averages)."""

    num_frames: int
    fps: float
    duration_s: float
    temporal_flickering: float
    motion_score: float
    moving_pixel_fraction: float
    drift_brightness: float
    drift_saturation: float
    drift_color: float
    drift_sharpness: float
    frame_mae: list[float] = field(default_factory=list)
    """Consecutive-frame MAE per pair, [0, 255] units (for the report plot)."""
    chunks: dict[str, list[float]] = field(default_factory=dict)
    """Per-chunk series of ``CHUNK_STATS``."""

    SCALARS = (
        "temporal_flickering", "motion_score", "moving_pixel_fraction",
        "drift_brightness", "drift_saturation", "drift_color", "drift_sharpness",
    )

    def to_dict(self) -> dict:
        """JSON-ready dict (per_video.json)."""
        return asdict(self)


def video_metrics(
    frames: np.ndarray, fps: float, chunk_frames: int, first_chunk_frames: int | None = None
) -> VideoMetrics:
    """All in-house metrics of one decoded video.

    Args:
        frames: ``[T, H, W, 3]`` uint8 RGB, ``T >= 2``.
        fps: frame rate (for ``duration_s``; 0 when unknown).
        chunk_frames: pixel frames per generation chunk (``4 * frames_per_block``).
        first_chunk_frames: pixel frames of the first chunk (``1 + 4 (frames_per_block - 1)``).
    """
    frames = _check_frames(frames, 2)
    mae, moving = _pair_stats(frames)
    stats = chunk_stats(frames, chunk_bounds(frames.shape[0], chunk_frames, first_chunk_frames))
    d = drift(stats)
    return VideoMetrics(
        num_frames=int(frames.shape[0]),
        fps=float(fps),
        duration_s=float(frames.shape[0] / fps) if fps > 0 else 0.0,
        temporal_flickering=(255.0 - float(mae.mean())) / 255.0,
        motion_score=float(mae.mean()) / 255.0,
        moving_pixel_fraction=float(moving.mean()),
        frame_mae=[float(x) for x in mae],
        chunks=stats,
        **d,
    )
