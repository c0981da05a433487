"""``stream-r1 evaluate`` end to end on the tiny checkpoints: generate with the student, score with the
tiny VideoReward, speed from generation.json, report; then re-score the generated videos with --videos."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from stream_r1.cli import main

pytestmark = pytest.mark.slow  # ~30-45 s on 2 shared CPU cores (generation + reward model)


def test_evaluate_generates_and_scores(tiny_checkpoints: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", "--config", "tiny_cpu", "--set", f"checkpoints.root={tiny_checkpoints}",
            "--set", "eval.max_prompts=2", "--checkpoint", str(tiny_checkpoints / "ode_init.pt"),
            "--prompts", "tiny", "--num-frames", "6", "--output", str(out)]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("temporal_flickering", "motion_score", "drift_brightness", "drift_sharpness",
                "reward_vq_mean", "reward_mq_mean", "reward_ta_mean", "reward_overall_mean",
                "fps", "chunk_latency_ms_p50", "chunk_latency_ms_p90", "first_chunk_latency_ms"):
        assert key in metrics, key
    assert metrics["num_videos"] == 2 and metrics["num_frames"] == 21  # 6 latent frames -> 1 + 4*5 pixel frames
    assert metrics["fps"] > 0 and 0 < metrics["temporal_flickering"] <= 1
    per_video = json.loads((out / "per_video.json").read_text())
    assert len(per_video) == 2 and all(v["reward_frames"] >= 2 for v in per_video)
    # reward_overall is the mean of the three z-scores, per video and overall.
    v = per_video[0]
    assert v["reward_overall"] == pytest.approx((v["reward_vq"] + v["reward_mq"] + v["reward_ta"]) / 3)
    assert len(v["chunks"]["brightness"]) == 2  # 6 latent frames = 2 chunks of frames_per_block=3
    gen = json.loads((out / "videos" / "generation.json").read_text())
    assert len(gen["videos"]) == 2
    html = (out / "report.html").read_text()
    assert all(s.startswith("data:") for s in re.findall(r"src=['\"]([^'\"]*)", html))

    # Re-score the same videos (prompts from generation.json): identical in-house and reward scores.
    again = tmp_path / "again"
    assert main(["evaluate", "--config", "tiny_cpu", "--set", f"checkpoints.root={tiny_checkpoints}",
                 "--videos", str(out / "videos"), "--output", str(again)]) == 0
    m2 = json.loads((again / "metrics.json").read_text())
    for key in ("temporal_flickering", "drift_brightness", "reward_vq_mean", "fps"):
        assert m2[key] == pytest.approx(metrics[key], rel=1e-5), key
