"""The world's VBench: detector measurements -> Quality / Semantic / Total scores in [0, 1].

Quality is the mean of three clean-video properties, each scored 1 at a clean render's value and 0
at a plainly degraded one (the bounds sit between the measured clean and degraded values of
:data:`stream_r1.shapes.world.DEGRADATIONS`, see tests/shapes):

* sharpness: ``(sharpness - 0.3) / (0.65 - 0.3)`` (clean renders measure 0.68-0.84, blurred 0.13-0.32);
* smoothness: ``(0.03 - path_rms) / (0.03 - 0.005)`` (clean <= 0.003, jittered 0.035-0.055 of the side);
* stability: ``1 - color_shift / 0.5`` (clean 0, drifted 0.6-1.5 chroma units).

Semantic is the mean of colour, shape and direction correctness against the prompt. Total weights
the halves equally (:data:`QUALITY_WEIGHT`): in this world the prompt carries as much information
as the look of the video, unlike VBench's 4:1 split over its sixteen dimensions.

A video is *degraded* when any quality property crosses its threshold (sharpness below 0.45, path
RMS above 0.02, colour shift above 0.25): the fraction of degraded outputs tells whether a model
samples the teacher's bad modes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from stream_r1.shapes.detect import Measurement, measure
from stream_r1.shapes.world import parse_prompt

QUALITY_WEIGHT = 0.5
"""Weight of Quality in Total (Semantic gets 1 - this)."""
SHARP_RANGE = (0.3, 0.65)
SMOOTH_RMS_RANGE = (0.005, 0.03)
STABLE_SHIFT_ZERO = 0.5
DEGRADED_SHARPNESS = 0.45
DEGRADED_PATH_RMS = 0.015
DEGRADED_COLOR_SHIFT = 0.25


def _clip01(x: float) -> float:
    return 0.0 if math.isnan(x) else min(1.0, max(0.0, x))


def score_measurement(m: Measurement, prompt: str) -> dict[str, float]:
    """Per-video scores of ``m`` against ``prompt``.

    Returns:
        ``{color, shape, direction}`` (0/1 correctness), ``{sharpness, smoothness, stability}``
        (scores in [0, 1]), ``degraded`` (0/1), ``quality``, ``semantic``, ``total``.

    Raises:
        ValueError: ``prompt`` is not a world prompt.
    """
    color, shape, direction = parse_prompt(prompt)
    if m.present < 0.5:
        zeros = dict.fromkeys(("color", "shape", "direction", "sharpness", "smoothness", "stability"), 0.0)
        return {**zeros, "degraded": 1.0, "quality": 0.0, "semantic": 0.0, "total": 0.0}
    lo, hi = SHARP_RANGE
    out = {
        "color": float(m.color == color),
        "shape": float(m.shape == shape),
        "direction": float(m.direction == direction),
        "sharpness": _clip01((m.sharpness - lo) / (hi - lo)),
        "smoothness": _clip01((SMOOTH_RMS_RANGE[1] - m.path_rms) / (SMOOTH_RMS_RANGE[1] - SMOOTH_RMS_RANGE[0])),
        "stability": _clip01(1 - m.color_shift / STABLE_SHIFT_ZERO),
    }
    out["degraded"] = float(
        m.sharpness < DEGRADED_SHARPNESS or m.path_rms > DEGRADED_PATH_RMS or m.color_shift > DEGRADED_COLOR_SHIFT
    )
    out["quality"] = (out["sharpness"] + out["smoothness"] + out["stability"]) / 3
    out["semantic"] = (out["color"] + out["shape"] + out["direction"]) / 3
    out["total"] = QUALITY_WEIGHT * out["quality"] + (1 - QUALITY_WEIGHT) * out["semantic"]
    return out


def score_video(frames: torch.Tensor, prompt: str) -> dict[str, float]:
    """:func:`score_measurement` of :func:`~stream_r1.shapes.detect.measure` on ``frames [T, 3, H, W]``."""
    return score_measurement(measure(frames), prompt)


def aggregate(per_video: Iterable[dict[str, float]]) -> dict[str, float]:
    """Mean of every score over videos (``degraded`` becomes the degraded fraction).

    Raises:
        ValueError: No videos.
    """
    rows = list(per_video)
    if not rows:
        raise ValueError("aggregate needs at least one scored video")
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
