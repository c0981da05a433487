"""``benchmarks/gpu_check.sh`` runs end to end at tiny geometry on CPU.

The script is meant for a lent GPU machine, where there is no time to debug it; this runs every stage
(the streaming benchmark, the smoke checkpoint writer in the preset's layout, `stream-r1 train
--config wan2.1_1gpu_smoke` through every real loader) with the tiny models and checks the table.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_gpu_check_tiny_geometry(repo_root: Path, tmp_path: Path) -> None:
    env = {**os.environ, "GPU_CHECK_GEOMETRY": "tiny", "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(repo_root / "benchmarks" / "gpu_check.sh"), str(tmp_path / "out")],
                          cwd=repo_root, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = proc.stdout[proc.stdout.index("| measure | value |"):]
    assert "streaming FPS, window cache, 12 latent frames" in table
    assert "| smoke training: optimizer steps" in table and "FAILED" not in table
    assert "| smoke training: generator loss finite" in table and "True" in table
    ckpt = tmp_path / "out" / "ckpt"
    assert (ckpt / "Wan2.1-T2V-1.3B-Diffusers" / "transformer" / "config.json").is_file()
    assert (ckpt / "VideoReward" / "model_config.json").is_file()
    assert (tmp_path / "out" / "train" / "final").is_dir()


def test_full_geometry_reward_base_is_qwen2_vl_2b(repo_root: Path) -> None:
    import importlib.util

    import torch
    from transformers import Qwen2VLForConditionalGeneration

    from stream_r1.reward.tiny import QWEN_SPECIAL_TOKENS

    spec = importlib.util.spec_from_file_location("gpu_smoke_checkpoints",
                                                  repo_root / "benchmarks" / "gpu_smoke_checkpoints.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ids = {t: 151643 + i for i, t in enumerate(QWEN_SPECIAL_TOKENS)}
    with torch.device("meta"):
        model = Qwen2VLForConditionalGeneration(mod.qwen2vl_2b_config(ids))
    n = sum(p.numel() for p in model.parameters())
    assert 2.1e9 < n < 2.3e9, n  # Qwen2-VL-2B-Instruct: 2.21 B parameters
