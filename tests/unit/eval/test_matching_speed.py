"""Video-to-prompt matching, speed metrics from generation.json, reward frame sampling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream_r1.eval.matching import match_videos
from stream_r1.eval.speed import read_generation, speed_metrics
from stream_r1.eval.suites import PromptSuite


def _suite() -> PromptSuite:
    return PromptSuite("s", ("a long cat prompt", "a long dog prompt"), "mem", ("a cat", "a dog"))


def _touch(d: Path, *names: str) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        (d / n).write_bytes(b"")


def test_match_by_vbench_name_short_prompt_and_index(tmp_path: Path) -> None:
    _touch(tmp_path, "a dog-0.mp4", "a dog-1.mp4", "0000_cat.mp4", "notes.txt")
    entries = match_videos(tmp_path, _suite())
    assert [(e.name, e.prompt_index, e.prompt) for e in entries] == [
        ("0000_cat", 0, "a long cat prompt"), ("a dog-0", 1, "a long dog prompt"), ("a dog-1", 1, "a long dog prompt"),
    ]


def test_match_by_index_json_and_stem(tmp_path: Path) -> None:
    _touch(tmp_path, "x.mp4", "y.mp4")
    (tmp_path / "index.json").write_text(json.dumps({"x.mp4": "a long dog prompt", "y.mp4": "free text"}))
    by = {e.name: e for e in match_videos(tmp_path, _suite())}
    assert by["x"].prompt_index == 1 and by["y"].prompt == "free text" and by["y"].prompt_index is None
    other = tmp_path / "other"
    _touch(other, "a cat on a mat-3.mp4")
    assert match_videos(other, None)[0].prompt == "a cat on a mat"
    idx = tmp_path / "list.json"
    idx.write_text(json.dumps([{"video": "a cat on a mat-3.mp4", "prompt": "P"}]))
    assert match_videos(other, None, idx)[0].prompt == "P"


def test_match_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        match_videos(tmp_path / "missing", None)
    _touch(tmp_path, "readme.txt")
    with pytest.raises(FileNotFoundError, match="no video files"):
        match_videos(tmp_path, None)
    _touch(tmp_path, "zebra.mp4", "7_x.mp4")
    with pytest.raises(ValueError, match="2 video"):
        match_videos(tmp_path, _suite())
    with pytest.raises(FileNotFoundError, match="index file"):
        match_videos(tmp_path, None, tmp_path / "nope.json")


def test_speed_metrics() -> None:
    gen = {"videos": [{"fps": 10.0, "chunk_latency_ms": [300, 100, 100]}, {"fps": 20.0, "chunk_latency_ms": [200, 100]}]}
    m = speed_metrics(gen)
    assert m["fps"] == 15.0 and m["first_chunk_latency_ms"] == 250.0
    assert m["chunk_latency_ms_p50"] == 100.0 and m["chunk_latency_ms_max"] == 300.0
    assert m["chunk_latency_ms_mean"] == pytest.approx(160.0)
    assert speed_metrics({"fps": 17.0, "chunk_latency_ms": [50.0]})["fps"] == 17.0
    assert speed_metrics({}) == {}


def test_read_generation(tmp_path: Path) -> None:
    assert read_generation(tmp_path) is None
    (tmp_path / "generation.json").write_text('{"fps": 3}')
    assert read_generation(tmp_path) == {"fps": 3}


def test_generation_json_is_an_index(tmp_path: Path) -> None:
    _touch(tmp_path, "video_000.mp4", "video_001.mp4")
    (tmp_path / "generation.json").write_text(json.dumps({"fps": 5.0, "videos": [
        {"path": "video_000.mp4", "prompt": "a long dog prompt", "chunk_latency_ms": [1.0]},
        {"path": "video_001.mp4", "prompt": "a long cat prompt", "chunk_latency_ms": [1.0]},
    ]}))
    entries = match_videos(tmp_path, _suite())
    assert [(e.name, e.prompt_index) for e in entries] == [("video_001", 0), ("video_000", 1)]


def test_restrict_generation_to_scored_videos(tmp_path: Path) -> None:
    from stream_r1.eval.evaluate import _restrict_generation
    from stream_r1.eval.matching import VideoEntry

    gen = {"fps": 99.0, "videos": [{"path": "a.mp4", "fps": 10.0, "chunk_latency_ms": [5.0]},
                                   {"path": "b.mp4", "fps": 30.0, "chunk_latency_ms": [7.0]}]}
    kept = _restrict_generation(gen, [VideoEntry(tmp_path / "b.mp4", "p", None, "b")])
    assert speed_metrics(kept) == {"fps": 30.0, "chunk_latency_ms_mean": 7.0, "chunk_latency_ms_p50": 7.0,
                                   "chunk_latency_ms_p90": 7.0, "chunk_latency_ms_max": 7.0,
                                   "first_chunk_latency_ms": 7.0}
    both = [VideoEntry(tmp_path / n, "p", None, n) for n in ("a.mp4", "b.mp4")]
    assert _restrict_generation(gen, both) is gen
