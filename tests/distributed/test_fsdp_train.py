"""Two-process gloo run of ``stream-r1 train`` under torchrun with FSDP2.

Every rank gathers its sharded generator fully (``DTensor.full_tensor``) and writes a digest; both
must agree with each other and with the full state dict rank 0 checkpointed (a second gather path).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stream_r1.distributed.state_dicts import parameter_digest
from stream_r1.models.loading import load_wan_transformer
from stream_r1.train.checkpoint import find_resume_checkpoint, load_checkpoint, load_full_tensors

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("param_dtype", ["float32", "bfloat16"])
def test_two_rank_fsdp2_step_keeps_ranks_identical(tiny_checkpoints, tmp_path, param_dtype):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    out = tmp_path / "run"
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "stream_r1", "train", "--config", "tiny_cpu",
           "--output", str(out), "--set", f"checkpoints.root={tiny_checkpoints}", "--set", "parallel.strategy=fsdp2",
           "--set", f"parallel.param_dtype={param_dtype}", "--set", f"model.dtype={param_dtype}", "--set", "train.global_batch_size=2",
           "--set", "train.num_optimizer_steps=1", "--set", "train.checkpoint_every_steps=1"]
    env = {**os.environ, "STREAM_R1_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    digests = [json.loads((out / "digests" / f"rank_{r:05d}.json").read_text()) for r in (0, 1)]
    assert digests[0]["optimizer_step"] == digests[1]["optimizer_step"] == 1
    assert digests[0]["generator"] == digests[1]["generator"]
    ckpt = find_resume_checkpoint(out)
    ck = load_checkpoint(ckpt, rank=0)
    model = load_wan_transformer(tiny_checkpoints / "base", causal=True)
    model.load_state_dict(load_full_tensors(ckpt)["model"]["generator"], strict=True)  # resharded 2 -> 1
    assert parameter_digest(model) == digests[0]["generator"]
    assert ck.state["world_size"] == 2 and ck.state["generator_steps"] == 1
    assert (out / "checkpoints" / "step_000001" / "rank_00001.pt").is_file()  # per-rank RNG state
    assert (out / "checkpoints" / "step_000001" / "dcp" / "__1_0.distcp").is_file()  # rank 1 wrote its shard


def test_world_size_must_divide_batch_before_models(tiny_checkpoints, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "stream_r1", "train", "--config", "tiny_cpu",
           "--output", str(tmp_path / "run"), "--set", f"checkpoints.root={tiny_checkpoints}",
           "--set", "train.grad_accum_steps=1"]  # 1 prompt per optimizer step cannot be split over 2 ranks
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    assert "world size 2 cannot split the recipe's batch: 1 prompts per optimizer step" in proc.stderr
    assert not (tmp_path / "run").exists()  # failed before writing anything


def test_two_rank_fsdp2_sigkill_and_resume_matches_straight_run(tiny_checkpoints, tmp_path):
    """Sharded resume: full model/optimizer states broadcast from rank 0 into FSDP2 modules."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "STREAM_R1_PROGRESS": "0", "OMP_NUM_THREADS": "1"}

    def run(out: Path, *extra: str) -> subprocess.CompletedProcess:
        cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "stream_r1", "train", "--config", "tiny_cpu",
               "--output", str(out), "--set", f"checkpoints.root={tiny_checkpoints}",
               "--set", "parallel.strategy=fsdp2", "--set", "train.global_batch_size=2",
               "--set", "train.num_optimizer_steps=2", "--set", "train.checkpoint_every_steps=1", *extra]
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)

    straight = run(tmp_path / "a")
    assert straight.returncode == 0, straight.stderr[-4000:]
    killed = run(tmp_path / "b", "--test-sigkill-after-checkpoint", "1")
    assert killed.returncode != 0
    assert not (tmp_path / "b" / "digests").exists()
    resumed = run(tmp_path / "b", "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    for r in (0, 1):
        a = json.loads((tmp_path / "a" / "digests" / f"rank_{r:05d}.json").read_text())
        b = json.loads((tmp_path / "b" / "digests" / f"rank_{r:05d}.json").read_text())
        assert a == b
    rows_a = (tmp_path / "a" / "tensorboard" / "metrics.jsonl").read_text().splitlines()
    rows_b = (tmp_path / "b" / "tensorboard" / "metrics.jsonl").read_text().splitlines()
    for la, lb in zip(rows_a, rows_b, strict=True):
        ja, jb = json.loads(la), json.loads(lb)
        assert ja["loss/critic"] == jb["loss/critic"] and ja.get("loss/generator") == jb.get("loss/generator")
