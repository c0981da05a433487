"""``pipeline run-local --world shapes``: the whole DAG on the trained shapes world, judged by its ground truth."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from stream_r1.shapes.build import MANIFEST
from stream_r1.shapes.sizes import get_size
from stream_r1.shapes.world import is_held_out

# The session's ci world build (tests/conftest.py) may run inside this test: minutes on 2 busy cores.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


def test_run_local_on_the_shapes_world(shapes_world_ci: Path, tmp_path: Path, repo_root_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from stream_r1.ops.pipeline import run_local
    from stream_r1.ops.registry.mlflow_registry import MlflowRegistry

    monkeypatch.chdir(repo_root_path)
    work = tmp_path / "work"
    shutil.copytree(shapes_world_ci, work / "shapes-world-ci")  # as a first run leaves it
    stamp = (work / "shapes-world-ci" / MANIFEST).stat().st_mtime_ns
    summary = run_local(workdir=work, world="shapes",
                        params={"overrides": ["train.num_optimizer_steps=4"], "run_id": "shapes-1"})
    assert summary.state == "SUCCEEDED", summary.error
    assert (work / "shapes-world-ci" / MANIFEST).stat().st_mtime_ns == stamp  # verified and reused, not rebuilt
    gt = {k: v for k, v in summary.metrics.items() if k.startswith("gt_")}
    assert {"gt_total", "gt_quality", "gt_semantic", "gt_color", "gt_shape", "gt_direction",
            "gt_degraded_fraction"} <= set(gt)
    assert all(0.0 <= v <= 1.0 for v in gt.values())
    evaluated = work / "shared" / "runs" / "shapes-1" / "evaluate"
    per_video = json.loads((evaluated / "per_video.json").read_text())
    assert per_video and all(is_held_out(v["prompt"]) for v in per_video)  # the world's held-out prompts
    # Scored in the geometry the student was trained in (the run's overrides), not the preset's 6 latent frames.
    assert {v["num_frames"] for v in per_video} == {get_size("ci").pixel_frames}
    assert "gt_total" in (evaluated / "report.html").read_text()
    info = MlflowRegistry(work / "registry.db").get("stream-r1-student", "shapes-1")
    assert info is not None  # the gate compared gt_total (the first registration has nothing to beat)
