"""``eval.ground_truth: shapes``: ``stream-r1 evaluate`` scores world videos with the world's pixel detectors.

The videos are the world's own renders written as mp4 (no model): clean renders must score as what they show,
the same videos under prompts that name another direction or colour must lose exactly that point, and
degraded renders must be flagged degraded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stream_r1.cli import main
from stream_r1.eval.video_io import write_video
from stream_r1.shapes.world import DIRECTIONS, parse_prompt, render, split_prompts

FRAMES, SIZE = 21, 32  # the shapes_cpu geometry: 6 latent frames, latent 4x4
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def _write(root: Path, videos: list[tuple[str, np.ndarray]]) -> Path:
    index = {}
    for i, (prompt, frames) in enumerate(videos):
        write_video(root / f"v{i}.mp4", frames)
        index[f"v{i}.mp4"] = prompt
    (root / "index.json").write_text(json.dumps(index))
    return root


def _uint8(video) -> np.ndarray:  # [T, 3, H, W] in [-1, 1] -> [T, H, W, 3] uint8
    return ((video.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)


def _evaluate(videos: Path, out: Path) -> dict[str, float]:
    args = ["evaluate", "--config", "shapes_cpu", "--set", "eval.reward_scores=false", "--videos", str(videos),
            "--index", str(videos / "index.json"), "--output", str(out)]
    assert main(args) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, np.ndarray]]:
    _, held_out = split_prompts()
    return [(p, _uint8(render(p, seed=i, num_frames=FRAMES, size=SIZE))) for i, p in enumerate(held_out[:6])]


def test_clean_renders_score_as_what_they_show(tmp_path: Path, clean) -> None:
    metrics = _evaluate(_write(tmp_path / "v", clean), tmp_path / "out")
    assert metrics["num_videos"] == 6
    assert metrics["gt_color"] == metrics["gt_shape"] == metrics["gt_direction"] == 1.0
    assert metrics["gt_degraded_fraction"] == 0.0
    assert metrics["gt_total"] > 0.9
    per_video = json.loads((tmp_path / "out" / "per_video.json").read_text())
    assert all(v["gt_semantic"] == 1.0 for v in per_video)
    assert "gt_total" in (tmp_path / "out" / "report.html").read_text()
    assert json.loads((tmp_path / "out" / "evaluation.json").read_text())["ground_truth"] == "shapes"


def test_a_wrong_prompt_loses_exactly_that_point(tmp_path: Path, clean) -> None:
    reversed_dir = []
    for prompt, frames in clean:
        color, shape, direction = parse_prompt(prompt)
        reversed_dir.append((f"a {color} {shape} moving {OPPOSITE[direction]}", frames))
    metrics = _evaluate(_write(tmp_path / "v", reversed_dir), tmp_path / "out")
    assert metrics["gt_direction"] == 0.0
    assert metrics["gt_color"] == metrics["gt_shape"] == 1.0
    assert metrics["gt_semantic"] == pytest.approx(2 / 3)
    assert set(OPPOSITE) == set(DIRECTIONS)


def test_degraded_renders_are_flagged(tmp_path: Path) -> None:
    _, held_out = split_prompts()
    blurred = [(p, _uint8(render(p, seed=i, num_frames=FRAMES, size=SIZE, mode="blur")))
               for i, p in enumerate(held_out[:4])]
    metrics = _evaluate(_write(tmp_path / "v", blurred), tmp_path / "out")
    assert metrics["gt_degraded_fraction"] == 1.0
    assert metrics["gt_sharpness"] < 0.5


def test_a_prompt_outside_the_world_fails_in_one_line_before_scoring(tmp_path: Path, clean,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    videos = _write(tmp_path / "v", [clean[0], ("a red fox trotting through snow", clean[1][1])])
    out = tmp_path / "out"
    args = ["evaluate", "--config", "shapes_cpu", "--set", "eval.reward_scores=false", "--videos", str(videos),
            "--index", str(videos / "index.json"), "--output", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a red fox trotting through snow" in err[0] and "eval.ground_truth=shapes" in err[0]
    assert not (out / "metrics.json").exists()


def test_the_config_refuses_an_unknown_world(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["evaluate", "--config", "shapes_cpu", "--set", "eval.ground_truth=cubes", "--videos",
                 str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    assert "eval.ground_truth='cubes'" in capsys.readouterr().err
