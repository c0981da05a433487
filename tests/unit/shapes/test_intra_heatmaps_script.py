"""``benchmarks/shapes_intra_heatmaps.py``: reads an ablation result file, refuses one without W_intra, draws."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "shapes_intra_heatmaps.py"


def _script():
    spec = importlib.util.spec_from_file_location("shapes_intra_heatmaps", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _rollout(prompt: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"prompt": prompt, "correlation": float(rng.uniform(-1, 1)),
            "w_intra": rng.random((3, 4, 4)).tolist(), "coverage": rng.random((3, 4, 4)).tolist()}


def test_rollouts_across_rows_are_limited_and_carry_their_seed() -> None:
    script = _script()
    results = {"rows": {"stream_r1": [{"seed": 0, "intra_vs_mask": [_rollout("a red circle moving left", 0)] * 2},
                                      {"seed": 1, "intra_vs_mask": [_rollout("a blue square moving up", 1)] * 2}]}}
    got = script.intra_rollouts(results, "stream_r1", 3)
    assert [r["seed"] for r in got] == [0, 0, 1]


def test_a_file_without_w_intra_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="--methods plain_dmd"):
        _script().intra_rollouts({"rows": {"plain_dmd": [{"seed": 0, "total": 0.4}]}}, "plain_dmd", 4)


def test_draw_writes_one_panel_pair_per_latent_frame(tmp_path: Path) -> None:
    script = _script()
    out = tmp_path / "images" / "intra.png"
    script.draw([{**_rollout("a red circle moving left", 0), "seed": 0},
                 {**_rollout("a green triangle moving down", 1), "seed": 1}], out)
    with Image.open(out) as image:
        width, height = image.size
    assert width > height  # 6 panels (3 frames x W_intra, mask) across, 2 rollouts down
