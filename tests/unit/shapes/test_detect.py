"""Ground-truth detectors: exact on clean renders, and each degradation is caught by its own detector."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stream_r1.shapes.detect import PRESENT_THRESHOLD, measure, object_mask
from stream_r1.shapes.metrics import aggregate, score_video
from stream_r1.shapes.world import DEGRADATIONS, all_prompts, render

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(("size", "frames"), [(32, 9), (64, 21)])
def test_detectors_read_every_clean_render_correctly(size: int, frames: int) -> None:
    prompts = all_prompts() if size == 32 else all_prompts()[::3]
    rows = [score_video(render(p, seed, frames, size), p) for p in prompts for seed in (0, 1_000_003)]
    agg = aggregate(rows)
    # Renders are deterministic, so the detectors are either right on every one or they are not.
    assert agg["color"] == agg["shape"] == agg["direction"] == 1.0
    assert agg["degraded"] == 0.0
    assert agg["quality"] > 0.95 and agg["total"] > 0.97


@pytest.mark.parametrize(("mode", "spoilt"), [("blur", "sharpness"), ("jitter", "smoothness"), ("drift", "stability")])
def test_each_degradation_is_flagged_by_its_own_detector(mode: str, spoilt: str) -> None:
    others = {"sharpness", "smoothness", "stability"} - {spoilt}
    for p in all_prompts()[::4]:
        s = score_video(render(p, 2, 9, 32, mode), p)
        assert s["degraded"] == 1.0, (p, mode, s)
        assert s[spoilt] < 0.4, (p, mode, s)
        assert all(s[o] > 0.9 for o in others), (p, mode, s)
        assert s["color" if mode != "drift" else "direction"] == 1.0
        assert s["quality"] < score_video(render(p, 2, 9, 32), p)["quality"] - 0.25


def test_wrong_prompt_loses_semantic_score_but_not_quality() -> None:
    v = render("a red circle moving left", 0, 9, 32)
    right = score_video(v, "a red circle moving left")
    wrong = score_video(v, "a green square moving up")
    assert wrong["semantic"] == 0.0 and right["semantic"] == 1.0
    assert wrong["quality"] == right["quality"]


def test_static_or_empty_videos_score_as_failures() -> None:
    v = render("a red circle moving left", 0, 9, 32)
    static = v[:1].expand(9, -1, -1, -1)
    s = score_video(static, "a red circle moving left")
    assert s["direction"] == 0.0 and s["color"] == 1.0
    empty = torch.full((9, 3, 32, 32), -1.0)
    assert measure(empty).present == 0.0
    e = score_video(empty, "a red circle moving left")
    assert e["total"] == 0.0 and e["degraded"] == 1.0


def test_object_mask_covers_the_object_only() -> None:
    v = render("a yellow square moving down", 4, 5, 32)
    m = object_mask(v)
    assert m.shape == (5, 32, 32)
    area = m.flatten(1).sum(dim=1).float()
    # A square of half-side 0.85 * 0.16 * 32 = 4.35 px covers about 76 px (anti-aliased edges +-1 px row).
    assert ((area > 55) & (area < 100)).all()
    assert (v.amax(dim=1)[~m] < -0.4).all()


def test_measure_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\[T, 3, H, W\]"):
        measure(torch.zeros(9, 32, 32))


def test_modes_table_is_the_one_tested() -> None:
    assert set(DEGRADATIONS) == {"clean", "blur", "jitter", "drift"}


def _lstsq_path_rms(frames: torch.Tensor) -> float:
    """path_rms by LAPACK's least squares, as the detector computed it before (float32)."""
    v = ((frames + 1) / 2).clamp(0, 1)
    weight = (v.amax(dim=1) - PRESENT_THRESHOLD).clamp_min(0)
    t, h, w = weight.shape
    mass = weight.flatten(1).sum(dim=1)
    cx = (weight.sum(dim=1) * ((torch.arange(w) + 0.5) / w)).sum(dim=1) / mass
    cy = (weight.sum(dim=2) * ((torch.arange(h) + 0.5) / h)).sum(dim=1) / mass
    path, s = torch.stack([cx, cy], dim=1), torch.arange(t, dtype=torch.float32)
    a = torch.stack([torch.ones_like(s), s], dim=1)
    coef = torch.linalg.lstsq(a, path).solution
    return float(((a @ coef - path) ** 2).sum(dim=1).mean().sqrt())


def test_path_rms_is_the_least_squares_line_fit() -> None:
    for seed in range(4):
        frames = render(all_prompts()[seed], seed, 9, 32, "jitter")
        # float32 least squares on centroids ~0.5 with residuals ~0.04: agreement to ~1e-6 relative.
        assert measure(frames).path_rms == pytest.approx(_lstsq_path_rms(frames), rel=1e-5, abs=1e-7)


_PATH_RMS = """
import sys
from stream_r1.shapes.detect import measure
from stream_r1.shapes.world import all_prompts, render
print(" ".join(measure(render(all_prompts()[s], s, 9, 32, "jitter")).path_rms.hex() for s in range(8)))
"""


def test_path_rms_is_the_same_in_every_process() -> None:
    # LAPACK's lstsq gave path_rms values that differed in the 7th digit between fresh processes (this test,
    # with 4 processes, failed 2 runs in 3), so the world's labels, and every build from a seed, changed from run to run.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = {
        subprocess.run([sys.executable, "-c", _PATH_RMS], capture_output=True, text=True, check=True, timeout=120,
                       env=env).stdout.strip()
        for _ in range(6)
    }
    assert len(runs) == 1, runs
