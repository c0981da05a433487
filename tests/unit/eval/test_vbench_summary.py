"""vbench_summary against published VBench leaderboard rows, partial labelling and bad names.

Published rows: FlashVideo (arXiv 2502.05179), Table 1, which reproduces VBench leaderboard
entries with all 16 dimensions and the leaderboard's Total / Quality / Semantic (percent, two
decimals). Our aggregation of the 16 rounded dimension scores must give back the published
aggregates to within rounding (0.02 points).
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from stream_r1.eval import VBENCH_DIMENSIONS, vbench_metrics, vbench_summary

ORDER = list(VBENCH_DIMENSIONS)  # TASK_INFO order, the column order of the published table

# name: (total, quality, semantic, 16 dimension scores in percent)
PUBLISHED = {
    "CogVideoX-5B": (81.61, 82.75, 77.04, [96.23, 96.52, 98.66, 96.92, 70.97, 61.98, 62.90, 85.23, 62.11, 99.40,
                                           82.81, 66.35, 53.20, 24.91, 25.38, 27.59]),
    "CogVideoX-2B": (81.57, 82.51, 77.79, [96.42, 96.53, 98.45, 97.76, 58.33, 61.47, 65.60, 87.81, 69.35, 97.00,
                                           86.87, 54.64, 57.51, 24.93, 25.56, 28.01]),
    "Mochi-1": (80.13, 82.64, 70.08, [96.99, 97.28, 99.40, 99.02, 61.85, 56.94, 60.64, 86.51, 50.47, 94.60,
                                      79.73, 69.24, 36.99, 20.33, 23.65, 25.15]),
    "OpenSoraPlan-V1.1": (78.00, 80.91, 66.38, [95.73, 96.73, 99.03, 98.28, 47.72, 56.85, 62.28, 76.30, 40.35,
                                                86.80, 89.19, 53.11, 27.17, 22.90, 23.87, 26.52]),
}


def _row(scores: list[float]) -> dict[str, float]:
    return {name: s / 100.0 for name, s in zip(ORDER, scores, strict=True)}


@pytest.mark.parametrize("model", sorted(PUBLISHED))
def test_published_rows_round_trip(model: str) -> None:
    total, quality, semantic, scores = PUBLISHED[model]
    out = vbench_summary(_row(scores))
    assert out["complete"] is True
    assert out["partial_dimensions"] == [] and out["missing_dimensions"] == []
    assert out["total_score"] * 100 == pytest.approx(total, abs=0.02)
    assert out["quality_score"] * 100 == pytest.approx(quality, abs=0.02)
    assert out["semantic_score"] * 100 == pytest.approx(semantic, abs=0.02)
    for key in ("total_score", "quality_score", "semantic_score"):
        assert 0.0 <= out[key] <= 1.0


def test_weights_and_denominators() -> None:
    q = sum(v.weight for v in VBENCH_DIMENSIONS.values() if v.group == "quality")
    s = sum(v.weight for v in VBENCH_DIMENSIONS.values() if v.group == "semantic")
    assert (q, s, len(VBENCH_DIMENSIONS)) == (6.5, 9.0, 16)
    # All dims at their Max -> every group score 1; all at Min -> 0.
    top = vbench_summary({k: v.max for k, v in VBENCH_DIMENSIONS.items()})
    low = vbench_summary({k: v.min for k, v in VBENCH_DIMENSIONS.items()})
    assert top["total_score"] == pytest.approx(1.0) and low["total_score"] == pytest.approx(0.0)


def test_partial_set_is_labelled_and_never_a_leaderboard_total() -> None:
    _, _, _, scores = PUBLISHED["CogVideoX-5B"]
    row = _row(scores)
    custom = {k: v for k, v in row.items() if k in ("subject_consistency", "temporal_flickering", "human_action")}
    out = vbench_summary(custom)
    assert out["complete"] is False
    assert out["partial_dimensions"] == sorted(custom)
    assert len(out["missing_dimensions"]) == 13
    # Quality over the two present quality dims only (not zero-filled as VBench's script would).
    sc = (row["subject_consistency"] - 0.1462) / (1 - 0.1462)
    tf = (row["temporal_flickering"] - 0.6293) / (1 - 0.6293)
    assert out["quality_score"] == pytest.approx((sc + tf) / 2)
    assert out["semantic_score"] == pytest.approx(row["human_action"])
    flat = vbench_metrics(custom)
    assert "vbench_total_score" not in flat and "vbench_total_score_partial" in flat
    assert flat["vbench_complete"] == 0.0
    assert vbench_metrics(row)["vbench_total_score"] == pytest.approx(0.8161, abs=2e-4)


def test_only_quality_dims_gives_nan_semantic() -> None:
    out = vbench_summary({"temporal_flickering": 0.98})
    assert math.isnan(out["semantic_score"]) and out["total_score"] == out["quality_score"]


def test_bad_names_and_values() -> None:
    with pytest.raises(ValueError, match="did you mean 'subject_consistency'"):
        vbench_summary({"subject_consistancy": 0.9})
    with pytest.raises(ValueError, match="divide percentages by 100"):
        vbench_summary({"subject_consistency": 96.2})
    with pytest.raises(ValueError, match="given twice"):
        vbench_summary({"subject_consistency": 0.9, "Subject Consistency": 0.9})
    with pytest.raises(TypeError):
        vbench_summary([("subject_consistency", 0.9)])  # type: ignore[arg-type]
    # Leaderboard-style spelling is accepted.
    assert vbench_summary({"Subject Consistency": 0.9})["num_dimensions"] == 1


def test_import_is_torch_free() -> None:
    code = "import sys, stream_r1.eval; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
