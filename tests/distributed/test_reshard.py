"""Sharded checkpoints written by 2 ranks resume in 1 process (DCP resharding), bitwise."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stream_r1.train.checkpoint import find_resume_checkpoint, verify_checkpoint

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "distributed" / "_reshard_step.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "STREAM_R1_PROGRESS": "0"}


def _equal(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def test_two_rank_sharded_checkpoint_loads_bitwise_in_one_process(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    save = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(SCRIPT), "save", str(tmp_path)],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert save.returncode == 0, save.stderr[-4000:]
    ckpt = find_resume_checkpoint(tmp_path)
    files = verify_checkpoint(ckpt)["files"]
    assert {"dcp/__0_0.distcp", "dcp/__1_0.distcp", "dcp/__0.sha256.json", "dcp/__1.sha256.json"} <= set(files)
    load = subprocess.run([sys.executable, str(SCRIPT), "load", str(tmp_path)], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert load.returncode == 0, load.stderr[-4000:]
    ref = torch.load(tmp_path / "reference.pt", weights_only=True)
    got = torch.load(tmp_path / "loaded.pt", weights_only=True)
    assert ref["optim"]["state"]  # Adam moments exist (one step was taken)
    _equal(ref, got, "state")
