"""``--runner docker`` set-up and the container job backend, without starting containers (fast)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream_r1.ops import containers
from stream_r1.ops.jobs.base import TrainJobRequest
from stream_r1.ops.jobs.container import ContainerJobBackend
from stream_r1.ops.steps import make_backend


def test_run_local_docker_says_in_one_line_what_is_missing(tmp_path, repo_root_path):
    """No podman on PATH: exit 2 with one line naming it and the fix, before any tiny checkpoints are written."""
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # the venv's tools only: no podman, no runc
    proc = subprocess.run([sys.executable, "-m", "stream_r1", "pipeline", "run-local", "--runner", "docker",
                           "--workdir", str(tmp_path / "w")], cwd=repo_root_path, env=env, text=True,
                          capture_output=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "podman is not installed" in lines[0] and "scripts/dev.sh containers" in lines[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "w" / "tiny-checkpoints").exists()


def test_container_backend_needs_an_image_and_a_mounted_output(tmp_path, monkeypatch):
    monkeypatch.delenv("STREAM_R1_TRAIN_IMAGE", raising=False)
    with pytest.raises(ValueError, match="STREAM_R1_TRAIN_IMAGE"):
        make_backend("container")
    backend = ContainerJobBackend("img:1", mounts=[str(tmp_path / "root")], client=object())
    request = TrainJobRequest(run_id="r-1", config="tiny_cpu", output_dir=str(tmp_path / "elsewhere" / "run"))
    with pytest.raises(ValueError, match="outside the directories mounted"):
        backend.run(request)  # refused before any container starts (the client is not a Docker client)
    cmd = backend.command(TrainJobRequest(run_id="r-1", config="tiny_cpu", output_dir=str(tmp_path / "root" / "x"),
                                          nproc_per_node=2))
    assert cmd[:5] == ["python", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert cmd[5:8] == ["-m", "stream_r1", "train"]


def test_unfinished_tasks_are_those_without_executor_output(tmp_path):
    for task, done in (("fetch-checkpoints", True), ("ode-init", False), ("train", True)):
        (tmp_path / task).mkdir()
        if done:
            (tmp_path / task / "executor_output.json").write_text("{}")
    assert containers.unfinished_tasks(tmp_path) == ["ode-init"]


def test_make_readable_opens_host_files_written_0600(tmp_path):
    tree = tmp_path / "ckpt"
    (tree / "sub").mkdir(parents=True)
    f = tree / "sub" / "w.safetensors"
    f.write_bytes(b"x")
    f.chmod(0o600)
    (tree / "sub").chmod(0o700)
    containers.make_readable(tree)
    assert f.stat().st_mode & 0o444 == 0o444 and (tree / "sub").stat().st_mode & 0o555 == 0o555


def test_backend_local_is_refused_where_steps_run_in_images():
    """The launcher's image has no torch: a cluster submission with backend=local fails before anything is sent."""
    from stream_r1.ops import pipeline as pl

    with pytest.raises(ValueError, match="backend=local trains inside the launcher step"):
        pl.cluster_arguments("tiny_cpu", {"checkpoint_source": "s3://m/wan", "backend": "local"})
    args = pl.cluster_arguments("tiny_cpu", {"checkpoint_source": "s3://m/wan"})  # the pipeline's default backend
    assert args.get("backend", pl.load_pipeline().component_spec.inputs["backend"].default) == "pytorchjob"
