"""VBench Quality / Semantic / Total aggregation (pure Python, no torch, no vbench).

The constants are VBench's published normalisation and weights (repository
``scripts/constant.py``, applied by ``scripts/cal_final_score.py``):

    normalized_d = (raw_d - Min_d) / (Max_d - Min_d) * w_d        (no clipping)
    Quality  = sum(normalized_d, d in QUALITY)  / sum(w_d, d in QUALITY)    (= 6.5)
    Semantic = sum(normalized_d, d in SEMANTIC) / sum(w_d, d in SEMANTIC)   (= 9)
    Total    = (4 * Quality + 1 * Semantic) / 5

VBench's script counts a missing dimension as 0, which silently deflates the Total. Here a
partial set is aggregated over the dimensions present only and labelled ``complete: False`` with
the missing names, so a custom-input run can never pass for a leaderboard Total.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DimensionSpec:
    """One VBench dimension: its group (``quality``/``semantic``), weight and normalisation range."""

    group: str
    weight: float
    min: float
    max: float


# The published dimension table, in VBench's TASK_INFO order.
VBENCH_DIMENSIONS: dict[str, DimensionSpec] = {
    "subject_consistency": DimensionSpec("quality", 1.0, 0.1462, 1.0),
    "background_consistency": DimensionSpec("quality", 1.0, 0.2615, 1.0),
    "temporal_flickering": DimensionSpec("quality", 1.0, 0.6293, 1.0),
    "motion_smoothness": DimensionSpec("quality", 1.0, 0.706, 0.9975),
    "dynamic_degree": DimensionSpec("quality", 0.5, 0.0, 1.0),
    "aesthetic_quality": DimensionSpec("quality", 1.0, 0.0, 1.0),
    "imaging_quality": DimensionSpec("quality", 1.0, 0.0, 1.0),
    "object_class": DimensionSpec("semantic", 1.0, 0.0, 1.0),
    "multiple_objects": DimensionSpec("semantic", 1.0, 0.0, 1.0),
    "human_action": DimensionSpec("semantic", 1.0, 0.0, 1.0),
    "color": DimensionSpec("semantic", 1.0, 0.0, 1.0),
    "spatial_relationship": DimensionSpec("semantic", 1.0, 0.0, 1.0),
    "scene": DimensionSpec("semantic", 1.0, 0.0, 0.8222),
    "appearance_style": DimensionSpec("semantic", 1.0, 0.0009, 0.2855),
    "temporal_style": DimensionSpec("semantic", 1.0, 0.0, 0.364),
    "overall_consistency": DimensionSpec("semantic", 1.0, 0.0, 0.364),
}
QUALITY_DIMENSIONS: tuple[str, ...] = tuple(k for k, v in VBENCH_DIMENSIONS.items() if v.group == "quality")
SEMANTIC_DIMENSIONS: tuple[str, ...] = tuple(k for k, v in VBENCH_DIMENSIONS.items() if v.group == "semantic")
QUALITY_WEIGHT = 4.0
SEMANTIC_WEIGHT = 1.0

# VBench's custom_input mode refuses these (they need the standard prompts' auxiliary info).
STANDARD_ONLY_DIMENSIONS: tuple[str, ...] = (
    "object_class", "multiple_objects", "scene", "appearance_style", "color", "spatial_relationship",
)


def canonical_dimension(name: str) -> str:
    """Map ``"Subject Consistency"`` / ``"subject-consistency"`` to ``"subject_consistency"``.

    Raises:
        ValueError: the name is not one of the 16 VBench dimensions (with a did-you-mean).
    """
    key = str(name).strip().lower().replace(" ", "_").replace("-", "_")
    if key in VBENCH_DIMENSIONS:
        return key
    close = difflib.get_close_matches(key, list(VBENCH_DIMENSIONS), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"unknown VBench dimension {name!r}{hint} Valid names (snake_case): {sorted(VBENCH_DIMENSIONS)}"
    )


def normalized_dimension_score(name: str, raw: float) -> float:
    """``(raw - Min) / (Max - Min) * w`` for one dimension (VBench's ``get_nomalized_score``)."""
    spec = VBENCH_DIMENSIONS[canonical_dimension(name)]
    return (float(raw) - spec.min) / (spec.max - spec.min) * spec.weight


def _group_score(normalized: dict[str, float], dims: tuple[str, ...]) -> float | None:
    present = [d for d in dims if d in normalized]
    if not present:
        return None
    return sum(normalized[d] for d in present) / sum(VBENCH_DIMENSIONS[d].weight for d in present)


def vbench_summary(dimension_scores: dict[str, float]) -> dict[str, Any]:
    """Aggregate raw VBench dimension scores into Quality / Semantic / Total.

    Args:
        dimension_scores: ``{dimension: raw score in [0, 1]}`` with snake_case VBench names
            (``subject_consistency`` ... ``overall_consistency``; spaces/hyphens and any case are
            accepted). Scores in percent are rejected, not guessed.

    Returns:
        ``quality_score``, ``semantic_score``, ``total_score`` (floats in [0, 1] for in-range
        inputs), ``complete`` (bool: all 16 dimensions present), ``num_dimensions``,
        ``partial_dimensions`` (sorted names present when incomplete, else ``[]``) and
        ``missing_dimensions``. A group with no dimension present scores ``nan``; the Total of a
        partial set is computed over the present dimensions and is NOT a leaderboard Total.

    Raises:
        ValueError: an unknown dimension name, a duplicate after canonicalisation, or a score that
            is not a finite number in [0, 1].
        TypeError: ``dimension_scores`` is not a mapping.
    """
    if not isinstance(dimension_scores, dict):
        raise TypeError(
            f"dimension_scores must be a dict {{dimension: score}}, got {type(dimension_scores).__name__}"
        )
    raw: dict[str, float] = {}
    for name, value in dimension_scores.items():
        key = canonical_dimension(name)
        if key in raw:
            raise ValueError(f"dimension {key!r} given twice (as {name!r}); pass each dimension once")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"score of {key!r} must be a number in [0, 1], got {value!r}") from None
        if not math.isfinite(v) or not 0.0 <= v <= 1.0:
            raise ValueError(
                f"score of {key!r} must be a raw VBench score in [0, 1], got {v!r}"
                + ("; divide percentages by 100" if 1.0 < v <= 100.0 else "")
            )
        raw[key] = v
    normalized = {k: normalized_dimension_score(k, v) for k, v in raw.items()}
    quality = _group_score(normalized, QUALITY_DIMENSIONS)
    semantic = _group_score(normalized, SEMANTIC_DIMENSIONS)
    if quality is not None and semantic is not None:
        total = (QUALITY_WEIGHT * quality + SEMANTIC_WEIGHT * semantic) / (QUALITY_WEIGHT + SEMANTIC_WEIGHT)
    else:
        total = quality if quality is not None else semantic
    missing = sorted(set(VBENCH_DIMENSIONS) - set(raw))
    complete = not missing
    return {
        "quality_score": float("nan") if quality is None else quality,
        "semantic_score": float("nan") if semantic is None else semantic,
        "total_score": float("nan") if total is None else total,
        "complete": complete,
        "num_dimensions": len(raw),
        "partial_dimensions": [] if complete else sorted(raw),
        "missing_dimensions": missing,
    }


def vbench_metrics(dimension_scores: dict[str, float]) -> dict[str, float]:
    """Flat ``vbench_*`` metrics.json keys for the runner and the compare tool.

    Per dimension ``vbench_<dim>``; then ``vbench_quality_score``, ``vbench_semantic_score`` and
    ``vbench_total_score`` when complete, or ``vbench_quality_score_partial`` etc. when not (so a
    partial run never fills the leaderboard keys), plus ``vbench_complete`` (1.0/0.0: metrics.json
    holds numbers only, for KFP ``Metrics``) and ``vbench_num_dimensions``.
    """
    summary = vbench_summary(dimension_scores)
    out: dict[str, float] = {f"vbench_{canonical_dimension(k)}": float(v) for k, v in dimension_scores.items()}
    suffix = "" if summary["complete"] else "_partial"
    for key in ("quality_score", "semantic_score", "total_score"):
        if not math.isnan(summary[key]):
            out[f"vbench_{key}{suffix}"] = summary[key]
    out["vbench_complete"] = 1.0 if summary["complete"] else 0.0
    out["vbench_num_dimensions"] = float(summary["num_dimensions"])
    return out
