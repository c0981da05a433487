"""``stream-r1 evaluate --videos DIR`` and ``stream-r1 compare`` end to end on synthetic mp4s (no models)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from stream_r1.cli import main
from stream_r1.eval.suites import resolve_suite
from stream_r1.eval.video_io import write_video

TINY = resolve_suite("tiny").prompts


def _video(level_step: int, t: int = 21, seed: int = 0) -> np.ndarray:
    """Textured frames whose brightness rises by ``level_step`` per 12-frame chunk."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 120, size=(16, 16, 3)).astype(np.int32)
    frames = [np.clip(base + 40 + level_step * max(0, (i - 9) // 12 + 1), 0, 255) for i in range(t)]
    return np.stack(frames).astype(np.uint8)


def _make_run(root: Path, step: int, latency: float) -> Path:
    d = root / f"videos_{step}"
    write_video(d / f"{TINY[0]}-0.mp4", _video(step))  # VBench naming
    write_video(d / "1_paper_boat.mp4", _video(step, seed=1))  # prompt-index naming
    (d / "generation.json").write_text(json.dumps({
        "videos": [{"prompt": TINY[0], "fps": 20.0, "chunk_latency_ms": [latency * 2, latency]},
                   {"prompt": TINY[1], "fps": 22.0, "chunk_latency_ms": [latency * 2, latency]}],
    }))
    return d


def test_evaluate_videos_then_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--config", "tiny_cpu", "--set", "eval.reward_scores=false", "--prompts", "tiny"]
    vids_a, vids_b = _make_run(tmp_path, 0, 100.0), _make_run(tmp_path, 30, 80.0)
    assert main(["evaluate", *common, "--videos", str(vids_a), "--output", str(tmp_path / "a")]) == 0
    assert main(["evaluate", *common, "--videos", str(vids_b), "--output", str(tmp_path / "b")]) == 0
    out = tmp_path / "a"
    assert (out / "config.yaml").is_file()  # the resolved config sits next to the evaluation
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("num_videos", "temporal_flickering", "motion_score", "moving_pixel_fraction", "drift_brightness",
                "drift_color", "drift_sharpness", "drift_brightness_abs", "fps", "chunk_latency_ms_p50",
                "chunk_latency_ms_p90", "first_chunk_latency_ms"):
        assert key in metrics, key
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["num_videos"] == 2 and metrics["fps"] == pytest.approx(21.0)
    assert metrics["chunk_latency_ms_max"] == 200.0 and metrics["first_chunk_latency_ms"] == 200.0
    assert not any(k.startswith("reward_") for k in metrics)
    per_video = json.loads((out / "per_video.json").read_text())
    assert [v["prompt"] for v in per_video] == [TINY[0], TINY[1]]
    assert len(per_video[0]["chunks"]["brightness"]) == 2  # 21 frames = 9 + 12 (frames_per_block=3)
    info = json.loads((out / "evaluation.json").read_text())
    assert any("reward" in n for n in info["notes"])
    html = (out / "report.html").read_text()
    assert all(s.startswith("data:image/png;base64,") for s in re.findall(r"src=['\"]([^'\"]*)", html))
    assert html.count("data:image/png;base64,") == 3  # 1 plot + 2 frame strips
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert b["drift_brightness"] == pytest.approx(30 / 255, abs=3 / 255)  # one 30-level step between chunks
    assert metrics["drift_brightness"] == pytest.approx(0.0, abs=2 / 255)

    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"\| chunk_latency_ms_p50 \| 150\.0000 \| 120\.0000 \| -30 \| -20\.0% \| lower ↓ \| better \|",
                     printed)
    assert re.search(r"\| drift_brightness_abs \|.*\| worse \|", printed)
    assert (tmp_path / "cmp" / "comparison.png").is_file()


def test_evaluate_input_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["evaluate", "--config", "tiny_cpu", "--output", str(tmp_path / "o")]
    assert main([*base, "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt" in capsys.readouterr().err
    assert main([*base, "--checkpoint", str(tmp_path), "--num-frames", "4"]) == 2
    assert "multiple of model.frames_per_block=3" in capsys.readouterr().err
    assert main([*base, "--checkpoint", str(tmp_path), "--prompts", "vbnch"]) == 2
    assert "did you mean the suite 'vbench'" in capsys.readouterr().err
    assert main([*base]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    vids = tmp_path / "v"
    write_video(vids / "unknown_name.mp4", _video(0, t=4))
    assert main([*base, "--set", "eval.reward_scores=false", "--videos", str(vids), "--prompts", "tiny"]) == 2
    assert "unknown_name.mp4" in capsys.readouterr().err
    # Reward scores on by default: a missing VideoReward checkpoint is reported before any work.
    assert main([*base, "--set", f"checkpoints.root={tmp_path}", "--videos", str(vids)]) == 2
    assert "eval.reward_scores=false" in capsys.readouterr().err
    assert not (tmp_path / "o" / "metrics.json").exists()
