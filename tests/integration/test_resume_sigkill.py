"""Crash safety of ``stream-r1 train``, with real SIGKILLs of a real training process.

The process kills itself through the testing flags ``--test-sigkill-after-checkpoint STEP`` (right
after the checkpoint of optimizer step STEP is published) and ``--test-sigkill-during-checkpoint
STEP`` (in the asynchronous save of STEP, after every shard and DCP's metadata are written into the
temp directory, before the manifest and the rename).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stream_r1.train.checkpoint import find_resume_checkpoint, list_checkpoints, verify_checkpoint

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DETERMINISTIC = ("loss/critic", "loss/generator", "grad_norm/critic", "grad_norm/generator", "reward/r_final",
                 "reward/penalty", "reward/w_inter", "rollout/ess", "critic/t", "dmd/t", "generator/exit_step")


def _train(root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "stream_r1", "train", "--config", "tiny_cpu", "--output", str(out),
           "--set", f"checkpoints.root={root}", "--set", "train.num_optimizer_steps=6",
           "--set", "train.checkpoint_every_steps=3", "--set", "train.keep_last_checkpoints=3", *extra]
    env = {**os.environ, "STREAM_R1_PROGRESS": "0"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "tensorboard" / "metrics.jsonl").read_text().splitlines()]


def test_sigkill_after_checkpoint_then_resume_is_bitwise(tiny_checkpoints, tmp_path):
    straight = _train(tiny_checkpoints, tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = _train(tiny_checkpoints, tmp_path / "resumed", "--test-sigkill-after-checkpoint", "3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [p.name for p in list_checkpoints(tmp_path / "resumed")] == ["step_000003"]
    resumed = _train(tiny_checkpoints, tmp_path / "resumed", "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = _rows(tmp_path / "straight"), _rows(tmp_path / "resumed")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(a, b):
        for k in DETERMINISTIC:
            assert ra.get(k) == rb.get(k), (ra["step"], k, ra.get(k), rb.get(k))  # bitwise (exact floats)


def test_sigkill_during_checkpoint_write_keeps_previous(tiny_checkpoints, tmp_path):
    out = tmp_path / "run"
    killed = _train(tiny_checkpoints, out, "--test-sigkill-during-checkpoint", "6")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [p.name for p in list_checkpoints(out)] == ["step_000003"]
    torn = out / "checkpoints" / ".tmp-step_000006"
    assert (torn / "dcp" / "__0_0.distcp").is_file() and not (torn / "MANIFEST.json").exists()  # the torn write
    verify_checkpoint(out / "checkpoints" / "step_000003")
    assert find_resume_checkpoint(out).name == "step_000003"
    again = _train(tiny_checkpoints, out, "--resume", "auto")
    assert again.returncode == 0, again.stderr[-3000:]
    assert [p.name for p in list_checkpoints(out)] == ["step_000003", "step_000006"]
    assert not list((out / "checkpoints").glob(".tmp-*"))
