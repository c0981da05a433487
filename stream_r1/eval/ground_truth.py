"""Ground-truth scoring of videos by a world that knows what every prompt should show (``eval.ground_truth``).

Evaluation stays world-agnostic: a world (e.g. :mod:`stream_r1.shapes`, which sits above evaluation in the
layers) provides a :class:`GroundTruth`, and :func:`stream_r1.eval.evaluate.evaluate` adds its per-video scores as
``gt_<name>`` columns and their means as ``gt_<name>`` metrics (``gt_degraded`` becomes
``gt_degraded_fraction``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

import numpy as np

from stream_r1.eval.video_io import to_unit_range

if TYPE_CHECKING:
    import torch

GT_PREFIX = "gt_"
"""Prefix of every ground-truth key in per_video.json and metrics.json."""


class GroundTruth(Protocol):
    """What a world provides to score its own videos."""

    name: str
    """The ``eval.ground_truth`` value it implements."""

    def check_prompt(self, prompt: str) -> None:
        """Raise ``ValueError`` (one line naming the prompt and the fix) when ``prompt`` is not of this world."""
        ...

    def score(self, frames: torch.Tensor, prompt: str) -> dict[str, float]:
        """Scores of one video ``[T, 3, H, W]`` float in ``[-1, 1]`` against ``prompt``."""
        ...


def check_prompts(truth: GroundTruth, prompts: Iterable[str]) -> None:
    """Every prompt must belong to the world (raises the world's one-line ``ValueError``)."""
    for prompt in prompts:
        truth.check_prompt(prompt)


def score_row(truth: GroundTruth, frames: np.ndarray, prompt: str) -> dict[str, float]:
    """``{gt_<name>: value}`` for one decoded video."""
    return {f"{GT_PREFIX}{k}": float(v) for k, v in truth.score(to_unit_range(frames), prompt).items()}


def aggregate_rows(per_video: list[dict[str, object]]) -> dict[str, float]:
    """Means of the ``gt_*`` columns over videos; ``gt_degraded`` is reported as ``gt_degraded_fraction``."""
    keys = sorted({k for row in per_video for k in row if k.startswith(GT_PREFIX)})
    out = {}
    for key in keys:
        name = f"{GT_PREFIX}degraded_fraction" if key == f"{GT_PREFIX}degraded" else key
        out[name] = float(np.mean([float(row[key]) for row in per_video]))  # type: ignore[arg-type]
    return out
