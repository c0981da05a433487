"""The optional DeepSpeed ZeRO backend: one-process step parity and a 2-rank gloo run.

Skipped when ``deepspeed`` is not importable (CI installs ``.[ops,dev]`` only); install the extra
with ``DS_BUILD_OPS=0 pip install 'stream-r1[deepspeed]'``. The first DeepSpeed process on a machine
JIT-builds its CPU shm comm op (~60 s, cached in ~/.cache/torch_extensions).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed", reason="optional extra: DS_BUILD_OPS=0 pip install 'stream-r1[deepspeed]'")

from stream_r1.distributed.state_dicts import parameter_digest
from stream_r1.models.loading import load_wan_transformer
from stream_r1.train.checkpoint import find_resume_checkpoint, load_checkpoint, load_full_tensors

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": "", "STREAM_R1_PROGRESS": "0",
       "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize(("stage", "optimizer"), [(2, "DeepSpeedZeroOptimizer"), (3, "DeepSpeedZeroOptimizer_Stage3")])
def test_zero_step_matches_plain_adamw(stage, optimizer):
    """Two windows x two micro-steps with clipping active: ZeRO fp32 == torch AdamW + clip_grad_norm_."""
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "distributed" / "_deepspeed_step.py"), str(stage)],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["optimizer"] == optimizer
    assert out["moved"] > 1e-3  # the step did something
    assert out["param_max_abs_diff"] <= 1e-6
    for a, b in zip(out["norms"], out["ref_norms"], strict=True):
        assert a == pytest.approx(b, rel=1e-5) and b > 0.05  # pre-clip norms, above the clip


def _train(tiny_checkpoints: Path, out: Path, *extra: str, strategy: str = "deepspeed") -> subprocess.CompletedProcess:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "stream_r1", "train", "--config", "tiny_cpu",
           "--output", str(out), "--set", f"checkpoints.root={tiny_checkpoints}",
           "--set", f"parallel.strategy={strategy}", "--set", "train.global_batch_size=2",
           "--set", "train.num_optimizer_steps=2", "--set", "train.checkpoint_every_steps=1", *extra]
    return subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)


def _digests(out: Path) -> list[dict]:
    return [json.loads((out / "digests" / f"rank_{r:05d}.json").read_text()) for r in (0, 1)]


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "tensorboard" / "metrics.jsonl").read_text().splitlines()]


KEYS = ("loss/critic", "loss/generator", "grad_norm/critic", "grad_norm/generator")
# 5x the gap measured on 2026-12-01 (`pytest -s -k "two_rank and bfloat16"` prints it): loss/critic 7.0e-4,
# loss/generator 1.4e-2, grad_norm/critic 2.7e-3, grad_norm/generator 3.9e-3 — a few bf16 roundoffs each.
BF16_REL_TOL = {"loss/critic": 4e-3, "loss/generator": 7e-2, "grad_norm/critic": 1.5e-2, "grad_norm/generator": 2e-2}


@pytest.fixture(scope="module")
def replicated_rows(tiny_checkpoints, tmp_path_factory) -> list[dict]:
    """The same 2-rank run with ``parallel.strategy=none`` (replicas + all-reduce): the reference."""
    out = tmp_path_factory.mktemp("none-run")
    proc = _train(tiny_checkpoints, out, strategy="none")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return _rows(out)


@pytest.mark.parametrize(("stage", "dtype"), [(2, "float32"), (2, "bfloat16"), (3, "float32")])
def test_two_rank_zero_run_keeps_ranks_identical(tiny_checkpoints, tmp_path, replicated_rows, stage, dtype):
    out = tmp_path / "run"
    proc = _train(tiny_checkpoints, out, "--set", f"parallel.zero_stage={stage}",
                  "--set", f"parallel.param_dtype={dtype}", "--set", f"model.dtype={dtype}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    d = _digests(out)
    assert d[0]["optimizer_step"] == d[1]["optimizer_step"] == 2
    assert d[0]["generator"] == d[1]["generator"]
    rows = _rows(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert "loss/generator" in rows[0] and "grad_norm/generator" in rows[0]
    for r in rows:
        for k in KEYS:
            assert k not in r or (math.isfinite(r[k]) and r[k] >= 0), (k, r.get(k))
    # Same schedule, accumulation, reduction and clipping as the fp32 replicated run. In fp32 only the
    # reduction order differs (1e-5). In bf16 (8-bit mantissa, unit roundoff 2^-8 = 3.9e-3) weights,
    # activations and gradients are rounded at every op; BF16_REL_TOL is 5x the largest relative gap to the
    # fp32 run measured on this 2-step run (printed below), so a broken bf16 path (wrong casts, lost
    # gradient scaling, garbage) fails while rounding does not.
    rel = 1e-5 if dtype == "float32" else BF16_REL_TOL
    for r, ref in zip(rows, replicated_rows, strict=True):
        assert set(KEYS) & set(r) == set(KEYS) & set(ref)
        for k in sorted(set(KEYS) & set(r)):
            print(f"{dtype} {k}: {r[k]!r} vs fp32 {ref[k]!r}: rel {abs(r[k] - ref[k]) / abs(ref[k]):.2e}")
            assert r[k] == pytest.approx(ref[k], rel=rel[k] if isinstance(rel, dict) else rel), k
    ckpt = find_resume_checkpoint(out)
    ck, full = load_checkpoint(ckpt, rank=0), load_full_tensors(ckpt)
    assert ck.state["world_size"] == 2 and ck.state["generator_steps"] == 1
    assert full["optim"]["generator"] == {"deepspeed_zero_stage": stage}  # ZeRO partitions are per rank
    assert set(ck.rank_state["optimizers"]) == {"generator", "critic"}
    if dtype == "float32":  # the checkpointed full state dict is the weights every rank holds
        model = load_wan_transformer(tiny_checkpoints / "base", causal=True)
        model.load_state_dict(full["model"]["generator"], strict=True)
        assert parameter_digest(model) == d[0]["generator"]


@pytest.mark.parametrize("stage", [2, 3])
def test_two_rank_zero_sigkill_and_resume_matches_straight_run(tiny_checkpoints, tmp_path, stage):
    """``--resume auto`` restores weights, EMA, RNG and each rank's ZeRO partition: bitwise equal."""
    s = ("--set", f"parallel.zero_stage={stage}")
    straight = _train(tiny_checkpoints, tmp_path / "a", *s)
    assert straight.returncode == 0, straight.stderr[-4000:]
    killed = _train(tiny_checkpoints, tmp_path / "b", *s, "--test-sigkill-after-checkpoint", "1")
    assert killed.returncode != 0
    assert not (tmp_path / "b" / "digests").exists()
    resumed = _train(tiny_checkpoints, tmp_path / "b", *s, "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    rows_a = (tmp_path / "a" / "tensorboard" / "metrics.jsonl").read_text().splitlines()
    rows_b = (tmp_path / "b" / "tensorboard" / "metrics.jsonl").read_text().splitlines()
    for la, lb in zip(rows_a, rows_b, strict=True):
        ja, jb = json.loads(la), json.loads(lb)
        for k in KEYS:
            assert ja.get(k) == jb.get(k), k
