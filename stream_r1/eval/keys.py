"""The flat metrics.json keys, what each means and which direction is better (docs/evaluation.md).

``compare`` uses the direction to say whether run B improved on run A. Directions:
``higher`` / ``lower`` (better), ``zero`` (a signed drift: closer to 0 is better), ``info`` (no
preference, e.g. counts).
"""

from __future__ import annotations

import re
from typing import Literal

Direction = Literal["higher", "lower", "zero", "info"]

METRIC_KEYS: dict[str, tuple[Direction, str]] = {
    "num_videos": ("info", "videos scored"),
    "num_frames": ("info", "pixel frames per video (mean)"),
    "duration_s": ("info", "video length in seconds (mean)"),
    "temporal_flickering": ("higher", "VBench temporal flickering, (255 - mean consecutive-frame MAE)/255, mean"),
    "motion_score": ("info", "mean consecutive-frame MAE / 255 (0 = frozen video); dynamics, no preference"),
    "moving_pixel_fraction": ("info", "fraction of pixels changing by > 10/255 between frames; dynamics"),
    "drift_brightness": ("zero", "last-quarter minus first-quarter chunk luma (/255), signed mean over videos"),
    "drift_brightness_abs": ("lower", "mean |drift_brightness| over videos"),
    "drift_saturation": ("zero", "last-quarter minus first-quarter chunk HSV saturation, signed mean"),
    "drift_saturation_abs": ("lower", "mean |drift_saturation| over videos"),
    "drift_color": ("lower", "Euclidean distance of mean RGB (/255) between first and last chunks, mean"),
    "drift_sharpness": ("zero", "relative change of Laplacian variance, last vs first chunks, signed mean"),
    "drift_sharpness_abs": ("lower", "mean |drift_sharpness| over videos"),
    "reward_vq_mean": ("higher", "VideoReward visual quality, z-normalised with the checkpoint's means/stds"),
    "reward_mq_mean": ("higher", "VideoReward motion quality, z-normalised"),
    "reward_ta_mean": ("higher", "VideoReward text alignment, z-normalised"),
    "reward_overall_mean": ("higher", "mean of the three z-normalised VideoReward axes"),
    "fps": ("higher", "generated pixel frames per second of wall time (from generation.json)"),
    "chunk_latency_ms_mean": ("lower", "per-chunk generation latency, mean over chunks and videos"),
    "chunk_latency_ms_p50": ("lower", "per-chunk latency, median"),
    "chunk_latency_ms_p90": ("lower", "per-chunk latency, 90th percentile"),
    "chunk_latency_ms_max": ("lower", "per-chunk latency, maximum"),
    "first_chunk_latency_ms": ("lower", "latency of the first chunk (time to first frames), mean over videos"),
    "vbench_quality_score": ("higher", "VBench Quality (all 7 quality dims present)"),
    "vbench_semantic_score": ("higher", "VBench Semantic (all 9 semantic dims present)"),
    "vbench_total_score": ("higher", "VBench Total = (4 Quality + Semantic)/5, only when all 16 dims present"),
    "vbench_complete": ("info", "1.0 when all 16 VBench dimensions were evaluated, else 0.0"),
    "vbench_num_dimensions": ("info", "VBench dimensions evaluated"),
    # eval.ground_truth=shapes: the world's pixel detectors against the prompt (stream_r1.shapes.metrics).
    "gt_total": ("higher", "world ground truth: Total = 0.5 Quality + 0.5 Semantic, mean over videos"),
    "gt_quality": ("higher", "world ground truth: mean of sharpness, smoothness and stability scores"),
    "gt_semantic": ("higher", "world ground truth: mean of colour, shape and direction correctness"),
    "gt_color": ("higher", "world ground truth: fraction of videos whose object has the prompt's colour"),
    "gt_shape": ("higher", "world ground truth: fraction of videos whose object has the prompt's shape"),
    "gt_direction": ("higher", "world ground truth: fraction of videos moving in the prompt's direction"),
    "gt_sharpness": ("higher", "world ground truth: edge sharpness score in [0, 1]"),
    "gt_smoothness": ("higher", "world ground truth: straight, even motion score in [0, 1] (jitter lowers it)"),
    "gt_stability": ("higher", "world ground truth: colour stability score in [0, 1] (drift lowers it)"),
    "gt_degraded_fraction": ("lower", "world ground truth: fraction of videos in a degraded mode (blur/jitter/drift)"),
}

_PATTERNS: tuple[tuple[str, Direction], ...] = (
    (r"^vbench_.*_partial$", "higher"),
    (r"^vbench_", "higher"),
    (r"^reward_", "higher"),
    (r"^chunk_latency_ms_", "lower"),
    (r"_abs$", "lower"),
)


def direction(key: str) -> Direction:
    """Which way ``key`` is better (``info`` for unknown keys)."""
    if key in METRIC_KEYS:
        return METRIC_KEYS[key][0]
    for pattern, d in _PATTERNS:
        if re.search(pattern, key):
            return d
    return "info"


def verdict(key: str, a: float, b: float, rel_tol: float = 1e-6) -> str:
    """``better`` / ``worse`` / ``same`` for going from ``a`` to ``b``, or ``n/a`` without a direction."""
    d = direction(key)
    if d == "info":
        return "n/a"
    if abs(b - a) <= rel_tol * max(1.0, abs(a), abs(b)):
        return "same"
    if d == "higher":
        return "better" if b > a else "worse"
    if d == "lower":
        return "better" if b < a else "worse"
    return "better" if abs(b) < abs(a) else ("same" if abs(b) == abs(a) else "worse")
