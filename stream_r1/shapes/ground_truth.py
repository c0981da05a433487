"""The shapes world as an evaluation ground truth (``eval.ground_truth: shapes``).

Scores come from :func:`stream_r1.shapes.metrics.score_video`, the world's detectors on the decoded pixels: no
model is involved, so they say what a video shows, not what a learnt judge believes.
"""

from __future__ import annotations

import torch

from stream_r1.config import RunConfig
from stream_r1.eval.ground_truth import GroundTruth
from stream_r1.shapes.metrics import score_video
from stream_r1.shapes.world import parse_prompt


class ShapesGroundTruth:
    """:class:`~stream_r1.eval.ground_truth.GroundTruth` of the shapes world."""

    name = "shapes"

    def check_prompt(self, prompt: str) -> None:
        """One line naming the prompt and the grammar when it is not a world prompt."""
        try:
            parse_prompt(prompt)
        except ValueError as e:
            raise ValueError(f"eval.ground_truth=shapes: {e}") from None

    def score(self, frames: torch.Tensor, prompt: str) -> dict[str, float]:
        """Per-video world scores (see :func:`stream_r1.shapes.metrics.score_measurement`)."""
        return score_video(frames, prompt)


def ground_truth_for(cfg: RunConfig) -> GroundTruth | None:
    """The scorer ``cfg.eval.ground_truth`` names (None when it is empty)."""
    return ShapesGroundTruth() if cfg.eval.ground_truth == "shapes" else None
