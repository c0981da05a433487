"""VBench runner pure parts: naming, staging, dimension selection, result parsing, orchestration.

vbench cannot be installed in this environment (it pins transformers 4.33 and numpy<2), so the orchestration test uses
``FakeVBench``, which writes ``<name>_eval_results.json`` in VBench 0.1.5's recorded structure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from stream_r1.eval.matching import VideoEntry
from stream_r1.eval.suites import PromptSuite
from stream_r1.eval.vbench_runner import (
    CUSTOM_MODE,
    STANDARD_MODE,
    main,
    parse_eval_results,
    plan_staging,
    select_dimensions,
    stage_videos,
    vbench_video_name,
)

# Structure of a real `<name>_eval_results.json` (VBench 0.1.5 `VBench.evaluate`): {dim: [mean, per-video list]}.
RECORDED = {
    "subject_consistency": [0.9623, [{"video_path": "/v/a cat-0.mp4", "video_results": 0.9611}]],
    "dynamic_degree": [0.5, [{"video_path": "/v/a cat-0.mp4", "video_results": True}]],
}


def _suite() -> PromptSuite:
    return PromptSuite("vbench_extended", ("a fluffy cat", "a dog running", "a fluffy cat again"), "mem",
                       ("a cat", "a dog", "a cat"))


def test_naming() -> None:
    assert vbench_video_name("In a still frame, a stop sign", 3) == "In a still frame, a stop sign-3.mp4"
    with pytest.raises(ValueError, match=r"0\.\.4"):
        vbench_video_name("x", 5)
    with pytest.raises(ValueError, match="file name"):
        vbench_video_name("a/b", 0)


def test_plan_staging_uses_short_prompts_and_counts_samples(tmp_path: Path) -> None:
    entries = [VideoEntry(tmp_path / f"video_{i}.mp4", p, i, f"video_{i}") for i, p in enumerate(_suite().prompts)]
    plan = plan_staging(entries, _suite(), STANDARD_MODE)
    # A duplicated short prompt (VBench's list has two) gets the next sample index.
    assert [s.staged_name for s in plan] == ["a cat-0.mp4", "a dog-0.mp4", "a cat-1.mp4"]
    custom = plan_staging(entries, None, CUSTOM_MODE)
    assert [s.staged_name for s in custom] == ["00000.mp4", "00001.mp4", "00002.mp4"]
    assert custom[0].prompt == "a fluffy cat"
    with pytest.raises(ValueError, match="--mode custom_input"):
        plan_staging([VideoEntry(tmp_path / "x.mp4", "x", None, "x")], _suite(), STANDARD_MODE)
    six = [VideoEntry(tmp_path / f"{k}.mp4", "a dog running", 1, str(k)) for k in range(6)]
    with pytest.raises(ValueError, match="more than 5"):
        plan_staging(six, _suite(), STANDARD_MODE)


def test_stage_videos_links_only_planned_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "video_0.mp4").write_bytes(b"abc")
    plan = plan_staging([VideoEntry(src / "video_0.mp4", "a fluffy cat", 0, "video_0")], _suite(), STANDARD_MODE)
    staging = stage_videos(plan, tmp_path / "stage")
    assert sorted(p.name for p in staging.iterdir()) == ["a cat-0.mp4"]
    assert (staging / "a cat-0.mp4").read_bytes() == b"abc"


def test_select_dimensions() -> None:
    dims, skipped = select_dimensions(None, STANDARD_MODE)
    assert len(dims) == 16 and skipped == []
    dims, skipped = select_dimensions(None, CUSTOM_MODE)
    assert len(dims) == 10 and "scene" in skipped and "object_class" not in dims
    with pytest.raises(ValueError, match="did you mean"):
        select_dimensions(["temporal_flickerin"], STANDARD_MODE)


def test_parse_eval_results(tmp_path: Path) -> None:
    assert parse_eval_results(RECORDED) == {"subject_consistency": 0.9623, "dynamic_degree": 0.5}
    p = tmp_path / "r.json"
    p.write_text(json.dumps(RECORDED))
    assert parse_eval_results(p)["dynamic_degree"] == 0.5
    with pytest.raises(ValueError, match="mean_score"):
        parse_eval_results({"scene": {"mean": 0.5}})


class FakeVBench:
    """Stands in for ``vbench.VBench`` (not installable here): records calls, writes VBench's result file."""

    calls: list[dict] = []

    def __init__(self, device: str, full_info_dir: str, output_path: str) -> None:
        self.output_path = Path(output_path)
        self.full_info_dir = full_info_dir

    def evaluate(self, videos_path: str, name: str, prompt_list: object, dimension_list: list[str],
                 local: bool, mode: str) -> None:
        FakeVBench.calls.append({"videos": sorted(p.name for p in Path(videos_path).iterdir()), "dims": dimension_list,
                                 "local": local, "mode": mode, "full_info": self.full_info_dir})
        dim = dimension_list[0]
        if dim == "scene":
            raise RuntimeError("weights missing from VBENCH_CACHE_DIR")
        (self.output_path / f"{name}_eval_results.json").write_text(json.dumps({dim: [0.8, []]}))


def test_main_with_fake_vbench(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "vbench_all_dimension.txt").write_text("a cat\na dog\n")
    (root / "vbench_all_dimension_extended.txt").write_text("a fluffy cat\na dog running\n")
    (root / "VBench_full_info.json").write_text("[]")
    vids = tmp_path / "videos"
    vids.mkdir()
    for i in range(2):
        (vids / f"video_{i:03d}.mp4").write_bytes(b"")
    (vids / "generation.json").write_text(json.dumps({"videos": [
        {"path": "video_000.mp4", "prompt": "a fluffy cat"}, {"path": "video_001.mp4", "prompt": "a dog running"}]}))
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"temporal_flickering": 0.97}))
    FakeVBench.calls = []
    rc = main(["--videos", str(vids), "--data-root", str(root), "--output", str(out), "--dimensions",
               "temporal_flickering", "subject_consistency", "scene"], vbench_factory=FakeVBench)
    assert rc == 1  # scene failed, the others were kept
    assert FakeVBench.calls[0]["videos"] == ["a cat-0.mp4", "a dog-0.mp4"]
    assert all(c["local"] and c["mode"] == STANDARD_MODE for c in FakeVBench.calls)
    assert FakeVBench.calls[0]["full_info"] == str(root / "VBench_full_info.json")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["temporal_flickering"] == 0.97  # the in-house keys are kept
    assert metrics["vbench_temporal_flickering"] == 0.8 and metrics["vbench_complete"] == 0.0
    assert "vbench_total_score" not in metrics and "vbench_quality_score_partial" in metrics
    summary = json.loads((out / "vbench_summary.json").read_text())
    assert "scene" in summary["failures"] and summary["summary"]["complete"] is False
    assert summary["summary"]["semantic_score"] is None and "NOT leaderboard" in summary["note"]
    assert main(["--videos", str(tmp_path / "nope"), "--output", str(out)], vbench_factory=FakeVBench) == 2


def test_runner_module_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, stream_r1.eval.vbench_runner; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
