"""Elastic restart: a rank killed mid-run makes torchrun (c10d rendezvous, ``--max-restarts``) restart
the whole job, which resumes from the last checkpoint and ends bitwise equal to an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream_r1.config import load_config
from stream_r1.distributed.launch import elastic_node_range, torchrun_command

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "STREAM_R1_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
DETERMINISTIC = ("loss/critic", "loss/generator", "grad_norm/critic", "grad_norm/generator", "reward/r_final",
                 "rollout/ess", "critic/t", "dmd/t", "generator/exit_step")


def test_torchrun_command_is_elastic_c10d():
    cmd = torchrun_command(num_nodes=4, nproc_per_node=8, job_id="sr1-abc", min_nodes=2, max_restarts=5,
                           args=["train", "--resume", "auto"])
    assert cmd[:2] == ["torchrun", "--nnodes"] and cmd[2] == "2:4"
    assert cmd[cmd.index("--rdzv-backend") + 1] == "c10d" and cmd[cmd.index("--rdzv-id") + 1] == "sr1-abc"
    assert cmd[cmd.index("--max-restarts") + 1] == "5" and "--rdzv-endpoint" not in cmd  # PET_RDZV_ENDPOINT
    assert cmd[-5:] == ["-m", "stream_r1", "train", "--resume", "auto"]


def test_elastic_range_only_admits_node_counts_that_split_the_batch():
    t = load_config("wan2.1_t2v_1.3b_stream_r1").train  # 64 prompts per optimizer step
    assert elastic_node_range(t, 4, 8) == (4, 4)
    assert elastic_node_range(t, 2, 8, min_nodes=1) == (1, 2)
    with pytest.raises(ValueError, match=r"2:4 nodes could restart with 3: world size 24 cannot split"):
        elastic_node_range(t, 4, 8, min_nodes=2)


def test_each_restart_round_sees_only_its_own_keys_in_the_shared_agent_store(monkeypatch):
    import torch.distributed as dist

    from stream_r1.distributed.env import _round_store

    server = dist.TCPStore("127.0.0.1", 0, world_size=1, is_master=True, wait_for_workers=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(server.port))
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    _round_store(1).set("rank_1", "dead-peer:1234")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    second = _round_store(1)
    assert second.check(["rank_1"]) is False  # the restarted round waits for the live peer's key
    second.set("rank_1", "live-peer:5678")
    assert second.get("rank_1") == b"live-peer:5678"
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE")
    assert _round_store(1) is None  # plain env:// (no torchrun agent store): torch's own path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker_pid(agent: int, rank: int) -> int | None:
    """The pid of the torchrun worker with ``RANK=rank`` among ``agent``'s children."""
    children = []
    for task in Path(f"/proc/{agent}/task").iterdir():
        children += (task / "children").read_text().split()
    for pid in children:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env:
            return int(pid)
    return None


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "tensorboard" / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.distributed
@pytest.mark.slow
def test_killed_rank_restarts_the_job_and_resumes_bitwise(tiny_checkpoints, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"

    def train_args(out: Path) -> list[str]:
        return ["train", "--config", "tiny_cpu", "--output", str(out), "--set", f"checkpoints.root={tiny_checkpoints}",
                "--set", "parallel.strategy=fsdp2", "--set", "train.global_batch_size=2",
                "--set", "train.num_optimizer_steps=4", "--set", "train.checkpoint_every_steps=1",
                "--set", "train.keep_last_checkpoints=4", "--resume", "auto"]

    straight = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "stream_r1",
                               *train_args(tmp_path / "a")], cwd=REPO, env=ENV, capture_output=True, text=True,
                              timeout=900)
    assert straight.returncode == 0, straight.stderr[-4000:]

    # 3 restarts, the production default. One restart must suffice: a round that fails with "Gloo connectFullMesh
    # failed ... Connection refused" read the previous round's peer addresses (see env._round_store).
    cmd = torchrun_command(num_nodes=1, nproc_per_node=2, job_id="elastic-test", max_restarts=3,
                           rdzv_endpoint=f"127.0.0.1:{_free_port()}", args=train_args(tmp_path / "b"))
    log = open(tmp_path / "elastic.log", "w")
    agent = subprocess.Popen([torchrun, *cmd[1:]], cwd=REPO, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    try:
        first = tmp_path / "b" / "checkpoints" / "step_000001"
        deadline = time.monotonic() + 600
        while not first.is_dir() and agent.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert first.is_dir() and agent.poll() is None, (tmp_path / "elastic.log").read_text()[-4000:]
        victim = _worker_pid(agent.pid, rank=1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        assert agent.wait(timeout=900) == 0, (tmp_path / "elastic.log").read_text()[-4000:]
    finally:
        if agent.poll() is None:
            agent.kill()
        log.close()
    text = (tmp_path / "elastic.log").read_text()
    assert "resumed from" in text  # the restarted workers continued from a checkpoint, not from step 0
    assert "connectFullMesh failed" not in text
    for r in (0, 1):
        a = json.loads((tmp_path / "a" / "digests" / f"rank_{r:05d}.json").read_text())
        b = json.loads((tmp_path / "b" / "digests" / f"rank_{r:05d}.json").read_text())
        assert a == b
    ra, rb = _rows(tmp_path / "a"), _rows(tmp_path / "b")
    assert [r["step"] for r in ra] == [r["step"] for r in rb] == [1, 2, 3, 4]
    for x, y in zip(ra, rb, strict=True):
        for k in DETERMINISTIC:
            assert x.get(k) == y.get(k), (x["step"], k)  # bitwise (exact floats)
