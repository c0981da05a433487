"""compare (table, differences, direction verdicts, files) and the self-contained HTML report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from stream_r1.eval.compare import compare_runs, load_metrics
from stream_r1.eval.keys import direction, verdict
from stream_r1.eval.report import frame_strip_png, render_report, write_report


def _write(dir_: Path, metrics: dict) -> Path:
    dir_.mkdir(parents=True)
    (dir_ / "metrics.json").write_text(json.dumps(metrics))
    return dir_


def test_directions() -> None:
    assert direction("temporal_flickering") == "higher"
    assert direction("chunk_latency_ms_p50") == "lower"
    assert direction("drift_brightness") == "zero"
    assert direction("vbench_subject_consistency") == "higher"
    assert direction("vbench_total_score_partial") == "higher"
    assert direction("something_new") == "info"
    assert verdict("drift_brightness", -0.2, 0.1) == "better"
    assert verdict("fps", 10.0, 10.0) == "same"
    assert verdict("num_videos", 2, 4) == "n/a"


def test_compare_table_and_files(tmp_path: Path) -> None:
    a = _write(tmp_path / "run_a", {"temporal_flickering": 0.95, "chunk_latency_ms_p50": 200.0,
                                    "drift_brightness": -0.10, "num_videos": 4, "only_a": 1.0})
    b = _write(tmp_path / "run_b", {"temporal_flickering": 0.97, "chunk_latency_ms_p50": 250.0,
                                    "drift_brightness": 0.05, "num_videos": 4})
    md, rows = compare_runs(a, b, tmp_path / "cmp")
    by = {r.key: r for r in rows}
    assert by["temporal_flickering"].diff == pytest.approx(0.02) and by["temporal_flickering"].verdict == "better"
    assert by["chunk_latency_ms_p50"].diff == pytest.approx(50.0)
    assert by["chunk_latency_ms_p50"].rel_diff == pytest.approx(0.25)
    assert by["chunk_latency_ms_p50"].verdict == "worse"
    assert by["drift_brightness"].verdict == "better"
    assert by["only_a"].b is None and by["only_a"].verdict == "missing"
    assert "| temporal_flickering | 0.9500 | 0.9700 | +0.02 | +2.1% | higher ↑ | better |" in md
    assert "2 better, 1 worse" in md
    out = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert len(out["rows"]) == 5
    assert (tmp_path / "cmp" / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "cmp" / "comparison.md").read_text().startswith("# Evaluation comparison")


def test_load_metrics_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"metrics\.json"):
        load_metrics(tmp_path)
    (tmp_path / "metrics.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="flat JSON object"):
        load_metrics(tmp_path)


def test_report_is_self_contained(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(10, 24, 32, 3), dtype=np.uint8)
    per_video = [{
        "name": "v0", "prompt": "a <b>cat</b>", "temporal_flickering": 0.9, "reward_vq": 0.3,
        "chunks": {"brightness": [0.5, 0.6], "saturation": [0.1, 0.1], "sharpness": [10.0, 9.0]},
        "frame_mae": [1.0, 2.0, 3.0],
    }]
    metrics = {"temporal_flickering": 0.9, "fps": 12.5}
    path = write_report(tmp_path / "report.html", metrics, per_video, {"v0": frame_strip_png(frames)},
                        info={"checkpoint": "ckpt"}, notes=["VideoReward skipped"])
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>")
    # No external references: every src is an embedded data URI, no href, no script.
    srcs = re.findall(r"src=['\"]([^'\"]*)", text)
    assert len(srcs) == 2 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "href=" not in text and "<script" not in text and "url(" not in text
    assert "a &lt;b&gt;cat&lt;/b&gt;" in text and "VideoReward skipped" in text
    assert "<code>fps</code>" in text


def test_frame_strip_shape() -> None:
    from io import BytesIO

    from PIL import Image

    frames = np.zeros((30, 48, 64, 3), dtype=np.uint8)
    img = Image.open(BytesIO(frame_strip_png(frames, num=4, height=24)))
    assert img.size == (4 * 32 + 3 * 2, 24)
    assert "<h2>Scores</h2>" in render_report({}, [], {})


def test_report_caps_frame_strips() -> None:
    frames = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    per_video = [{"name": f"v{i}", "prompt": "p", "chunks": {"brightness": [0.1, 0.2]}, "frame_mae": [1.0]}
                 for i in range(5)]
    strips = {v["name"]: frame_strip_png(frames) for v in per_video}
    html = render_report({}, per_video, strips, max_strips=2)
    assert html.count("alt='frames of") == 2 and "first 2 of 5 videos" in html
    assert html.count("<tr><td>v") == 5  # the per-video table still lists every video
