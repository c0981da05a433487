"""HSDP (replicate x shard) FSDP2 on gloo: two ranks over one global batch == one process over it,
and the mesh shape for 1, 2 and 4 nodes of 8 GPUs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stream_r1.distributed.mesh import mesh_shape

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "distributed" / "_hsdp_step.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "STREAM_R1_PROGRESS": "0"}


@pytest.mark.parametrize(("nodes", "shape"), [(1, (1, 8)), (2, (2, 8)), (4, (4, 8))])
def test_mesh_is_nodes_by_gpus(nodes, shape):
    assert mesh_shape(nodes * 8, 8) == shape


def test_mesh_shard_size_override_and_errors():
    assert mesh_shape(16, 8, shard_size=16) == (1, 16)  # plain FSDP over both nodes
    assert mesh_shape(16, 8, shard_size=4) == (4, 4)
    assert mesh_shape(2, 2, shard_size=1) == (2, 1)
    with pytest.raises(ValueError, match=r"parallel\.shard_size=3 must divide the world size 16"):
        mesh_shape(16, 8, shard_size=3)
    with pytest.raises(ValueError, match=r"parallel\.shard_size=12 must be a whole number of nodes of 8"):
        mesh_shape(24, 8, shard_size=12)
    with pytest.raises(ValueError, match=r"world size 12 is not a whole number of nodes of 8"):
        mesh_shape(12, 8)


def _run(out: Path, *, ranks: int, shard_size: int = 0) -> dict:
    if ranks == 1:
        cmd = [sys.executable, str(SCRIPT), str(out)]
    else:
        torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
        cmd = [torchrun, "--standalone", "--nproc_per_node", str(ranks), str(SCRIPT), str(out),
               "--shard-size", str(shard_size)]
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(out, weights_only=True)


@pytest.mark.distributed
@pytest.mark.slow
def test_two_node_hsdp_equals_one_process_over_the_global_batch(tmp_path):
    one = _run(tmp_path / "one.pt", ranks=1)
    hsdp = _run(tmp_path / "hsdp.pt", ranks=2, shard_size=1)  # 2 "nodes" x 1 rank
    assert not one["distributed"] and hsdp["distributed"]
    assert hsdp["mesh_shape"] == [2, 1]
    assert hsdp["critic_mesh"] == ["replicate", "shard"]  # trainable: HSDP over both dimensions
    assert hsdp["teacher_mesh"] == ["shard"]  # frozen: sharded within its node only
    # Per-sample gradients are computed by the same ops on the same inputs; what differs is where
    # the 2 samples' gradients are summed (accumulation vs the cross-rank all-reduce) and the order
    # of the sharded norm's partial sums: a few fp32 ulps (2**-23 ~ 1.2e-7 relative), which AdamW's
    # first steps (update ~ lr * g / |g|) pass through unamplified. 1e-5 relative leaves margin;
    # a wrong reduction (sum instead of mean, a missing rank) moves parameters by ~lr = 1e-3.
    for a, b in zip(one["norms"], hsdp["norms"], strict=True):
        assert b == pytest.approx(a, rel=1e-5)
    assert set(one["params"]) == set(hsdp["params"])
    for k, v in one["params"].items():
        torch.testing.assert_close(hsdp["params"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    moved = max(float((v - one["init"][k]).abs().max()) for k, v in one["params"].items())
    assert moved > 1e-4  # the steps changed the weights, so the equality above is not trivial
