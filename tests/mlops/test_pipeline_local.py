"""train/evaluate ``.python_func`` on tiny checkpoints, and the whole DAG through ``run_local`` (kfp.local)."""

import json
import re
import socket
from pathlib import Path

import pytest
from kfp import dsl

from stream_r1.ops.store import ArtifactStore

pytestmark = [pytest.mark.s3, pytest.mark.slow]


@pytest.fixture(scope="module")
def trained(seaweed, tiny_checkpoints, tmp_path_factory):
    """One real 2-step training run through the train component's function and the local torchrun backend."""
    import os

    from components.train.component import train

    old = dict(os.environ)
    os.environ.update(seaweed.env())
    try:
        ArtifactStore(seaweed, "unit").ensure_bucket()
        out = tmp_path_factory.mktemp("train")
        run = dsl.Model(uri=str(out / "run"))
        tb = dsl.Markdown(uri=str(out / "tensorboard.md"))
        train.python_func(checkpoints=dsl.Model(uri=str(tiny_checkpoints)),
                          student_init=dsl.Model(uri=str(tiny_checkpoints / "ode_init.pt")), config="tiny_cpu",
                          overrides=["train.num_optimizer_steps=2"], backend="local", nproc_per_node=1,
                          bucket="unit", run_id="unit-1", run=run, tensorboard=tb)
        assert "s3://unit/runs/unit-1/train/tensorboard/" in Path(tb.path).read_text()
    finally:
        os.environ.clear()
        os.environ.update(old)
    return run


def test_train_python_func_exports_and_publishes(seaweed, trained):
    meta = trained.metadata
    assert meta["export_uri"] == "s3://unit/runs/unit-1/train/final" and len(meta["config_hash"]) >= 8
    assert (Path(trained.path) / "final" / "generator" / "config.json").is_file()
    store = ArtifactStore(seaweed, "unit")
    assert store.exists("runs/unit-1/train/final/generator/config.json")
    assert store.exists("runs/unit-1/train/tensorboard/metrics.jsonl")
    # the job log holds the training process's own output (not just the launcher's line)
    job_log = (Path(trained.path) / "train_job.log").read_text()
    assert re.search(r"training from optimizer step 0 to [1-9]\d*", job_log), job_log[-2000:]


def test_evaluate_python_func_metrics_and_report(s3_env, trained, tiny_checkpoints, tmp_path, repo_root_path,
                                                 monkeypatch):
    from components.evaluate.component import evaluate

    monkeypatch.chdir(repo_root_path)  # the tiny prompt file is a repo-relative path in the preset
    metrics = dsl.Metrics(uri=str(tmp_path / "metrics.json"))
    report = dsl.HTML(uri=str(tmp_path / "report.html"))
    table = dsl.Markdown(uri=str(tmp_path / "table.md"))
    evaluate.python_func(checkpoints=dsl.Model(uri=str(tiny_checkpoints)), run=trained, config="tiny_cpu",
                         prompts="tests/assets/prompts/tiny.txt", bucket="unit", run_id="unit-1", metrics=metrics,
                         report=report, table=table)
    values = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= values["temporal_flickering"] <= 1.0 and "reward_overall_mean" in values
    assert metrics.metadata["temporal_flickering"] == values["temporal_flickering"]
    assert "<html" in (tmp_path / "report.html").read_text().lower()
    assert "| `temporal_flickering` |" in (tmp_path / "table.md").read_text()
    assert ArtifactStore(s3_env, "unit").exists("runs/unit-1/evaluate/report.html")


def test_run_local_whole_dag(tmp_path, repo_root_path, monkeypatch):
    """The README's main command end to end: own SeaweedFS, tiny checkpoints, every step, registry, server stopped."""
    from stream_r1.ops.pipeline import run_local
    from stream_r1.ops.registry.mlflow_registry import MlflowRegistry

    monkeypatch.chdir(repo_root_path)
    summary = run_local(workdir=tmp_path / "work", params={"overrides": ["train.num_optimizer_steps=2"]})
    assert summary.state == "SUCCEEDED", summary.error
    steps = {a.split(f"runs/{summary.run_id}/")[1].split("/")[0].split()[0] for a in summary.artifacts}
    assert {"checkpoints", "ode_init", "train", "evaluate", "status.json"} <= steps
    assert "temporal_flickering" in summary.metrics
    info = MlflowRegistry(tmp_path / "work" / "registry.db").get("stream-r1-student", summary.run_id)
    assert info is not None and info.uri.endswith(f"runs/{summary.run_id}/train/final") and info.config_hash
    assert (Path(summary.tensorboard_logdir) / "metrics.jsonl").is_file()
    host, port = summary.endpoint.split("//")[1].split(":")
    with socket.socket() as s:  # the server it started is gone
        assert s.connect_ex((host, int(port))) != 0
