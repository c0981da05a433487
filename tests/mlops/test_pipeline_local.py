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
    from stream_r1.ops.fetch import fetch_checkpoints

    old = dict(os.environ)
    os.environ.update(seaweed.env())
    try:
        store = ArtifactStore(seaweed, "unit")
        ckpts = fetch_checkpoints(str(tiny_checkpoints), store).uri
        out = tmp_path_factory.mktemp("train")
        model = dsl.Model(uri=str(out / "model"))
        tb = dsl.Markdown(uri=str(out / "tensorboard.md"))
        outputs = train.python_func(checkpoints_uri=ckpts, student_init=f"{ckpts}/ode_init.pt", config="tiny_cpu",
                                    overrides=["train.num_optimizer_steps=2"], backend="local", num_nodes=1,
                                    gpus_per_node=0, nproc_per_node=1, node_selector={}, tolerations=[],
                                    runs_pvc="stream-r1-runs", train_image="ghcr.io/stream-r1/stream-r1-train:0.1.0",
                                    queue_name="", priority_class="", bucket="unit", run_id="unit-1", job_id="",
                                    shared_dir=str(out / "shared"), model=model, tensorboard=tb)
        assert "s3://unit/runs/unit-1/train/tensorboard/" in Path(tb.path).read_text()
    finally:
        os.environ.clear()
        os.environ.update(old)
    return {"model": model, "export_uri": outputs.export_uri, "config_hash": outputs.config_hash, "ckpts": ckpts,
            "shared": out / "shared"}


def test_train_python_func_exports_and_publishes(seaweed, trained):
    meta, model = trained["model"].metadata, Path(trained["model"].path)
    assert trained["export_uri"] == meta["export_uri"] and len(trained["config_hash"]) >= 8
    assert trained["export_uri"].startswith("s3://unit/runs/unit-1/export/")
    # The Model artifact is the export itself: one diffusers directory, not the run directory.
    assert sorted(p.name for p in model.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors",
                                                       "stream_r1_export.json"]
    store = ArtifactStore(seaweed, "unit")
    key = trained["export_uri"].split("/", 3)[3]
    assert store.manifest(key)["diffusion_pytorch_model.safetensors"]["size"] == \
        (model / "diffusion_pytorch_model.safetensors").stat().st_size
    assert store.exists("runs/unit-1/train/tensorboard/metrics.jsonl")
    # Resume state stays on the shared volume; it is not copied to the bucket.
    assert not store.list_keys("runs/unit-1/train/checkpoints/") and not store.list_keys("runs/unit-1/train/final/")
    run_dir = trained["shared"] / "runs" / "unit-1" / "train"
    assert any((run_dir / "checkpoints").iterdir())
    # the job log holds the training process's own output (not just the launcher's line)
    job_log = (run_dir / "train_job.log").read_text()
    assert re.search(r"training from optimizer step 0 to [1-9]\d*", job_log), job_log[-2000:]


def test_evaluate_python_func_metrics_and_report(s3_env, trained, tmp_path, repo_root_path, monkeypatch):
    from components.evaluate.component import evaluate

    monkeypatch.chdir(repo_root_path)  # the tiny prompt file is a repo-relative path in the preset
    metrics = dsl.Metrics(uri=str(tmp_path / "metrics.json"))
    report = dsl.HTML(uri=str(tmp_path / "report.html"))
    table = dsl.Markdown(uri=str(tmp_path / "table.md"))
    # The run's overrides reach `stream-r1 evaluate`: 3 latent frames where the preset streams 6.
    evaluate.python_func(checkpoints_uri=trained["ckpts"], export_uri=trained["export_uri"], config="tiny_cpu",
                         overrides=["eval.num_frames=3"], prompts="tests/assets/prompts/tiny.txt", bucket="unit",
                         run_id="unit-1", shared_dir=str(trained["shared"]), metrics=metrics, report=report,
                         table=table)
    values = json.loads((tmp_path / "metrics.json").read_text())
    assert values["num_frames"] == 1 + 4 * (3 - 1)  # the Wan VAE's 4x temporal compression, causal first frame
    assert 0.0 <= values["temporal_flickering"] <= 1.0 and "reward_overall_mean" in values
    assert metrics.metadata["temporal_flickering"] == values["temporal_flickering"]
    assert "<html" in (tmp_path / "report.html").read_text().lower()
    assert "| `temporal_flickering` |" in (tmp_path / "table.md").read_text()
    assert ArtifactStore(s3_env, "unit").exists("runs/unit-1/evaluate/report.html")


def test_run_local_whole_dag(tmp_path, repo_root_path, monkeypatch, plain_s3_download):
    """The README's main command end to end: own SeaweedFS, tiny checkpoints, every step, registry, server stopped;
    then the registered URI, read back with a plain S3 client, loads with ``WanTransformer3DModel.from_pretrained``."""
    from diffusers import WanTransformer3DModel

    from stream_r1.ops.pipeline import run_local
    from stream_r1.ops.registry.mlflow_registry import MlflowRegistry
    from stream_r1.ops.seaweed import SeaweedServer

    monkeypatch.chdir(repo_root_path)
    summary = run_local(workdir=tmp_path / "work", params={"overrides": ["train.num_optimizer_steps=2"],
                                                           "run_id": "dag-1"})
    assert summary.state == "SUCCEEDED", summary.error
    assert summary.run_id == "dag-1" and summary.exit_code == 0  # the user's run id, not a generated one
    steps = {a.split(f"runs/{summary.run_id}/")[1].split("/")[0].split()[0] for a in summary.artifacts}
    assert {"checkpoints.json", "ode_init", "train", "export", "evaluate", "status.json"} <= steps
    assert "temporal_flickering" in summary.metrics
    info = MlflowRegistry(tmp_path / "work" / "registry.db").get("stream-r1-student", summary.run_id)
    assert info is not None and info.uri.startswith(f"s3://stream-r1/runs/{summary.run_id}/export/")
    assert info.config_hash
    assert (Path(summary.tensorboard_logdir) / "metrics.jsonl").is_file()
    host, port = summary.endpoint.split("//")[1].split(":")
    with socket.socket() as s:  # the server it started is gone
        assert s.connect_ex((host, int(port))) != 0
    with SeaweedServer(tmp_path / "work" / "seaweed") as creds:  # the same bucket data, served again
        plain_s3_download(creds, info.uri, tmp_path / "registered")
    model = WanTransformer3DModel.from_pretrained(str(tmp_path / "registered"))
    assert model.config.num_layers >= 1 and sum(p.numel() for p in model.parameters()) > 0


def test_rerun_with_a_registered_run_id_writes_elsewhere(seaweed, s3_env, tmp_path, repo_root_path, monkeypatch):
    """Run 1 registers ``rerun-1``; run 2 reuses the id on another machine (fresh work dir, same bucket and
    registry) with other weights and is rejected by the gate: the registered export's objects are untouched."""
    from stream_r1.ops.pipeline import run_local
    from stream_r1.ops.registry.mlflow_registry import MlflowRegistry

    monkeypatch.chdir(repo_root_path)
    bucket, registry = "rerun", str(tmp_path / "registry.db")
    common = {"run_id": "rerun-1", "registry_uri": registry, "ode_init_path": "ode_init.pt"}
    store = ArtifactStore(seaweed, bucket)

    def status() -> str:  # the run's own record, whatever the summary says about it
        return str(store.get_json("runs/rerun-1/status.json")["state"])

    first = run_local(workdir=tmp_path / "w1", endpoint=seaweed.url, bucket=bucket,
                      params={**common, "overrides": ["train.num_optimizer_steps=2"]})
    assert status() == "SUCCEEDED", first.error
    registered = MlflowRegistry(registry).get("stream-r1-student", "rerun-1")
    key = registered.uri.split("/", 3)[3]
    before = {o.object_name: (o.etag, o.last_modified) for o in store.client.list_objects(bucket, key + "/",
                                                                                           recursive=True)}
    assert f"{key}/diffusion_pytorch_model.safetensors" in before

    second = run_local(workdir=tmp_path / "w2", endpoint=seaweed.url, bucket=bucket,
                       params={**common, "overrides": ["train.num_optimizer_steps=2", "train.seed=7"],
                               "gate_min_value": 1.0e9})
    assert status() == "SUCCEEDED", second.error  # the gate said no; the run itself worked
    exports = {k.split("/")[3] for k in store.list_keys("runs/rerun-1/export/")}
    assert len(exports) == 2  # the rerun's export went to its own content address
    after = {o.object_name: (o.etag, o.last_modified) for o in store.client.list_objects(bucket, key + "/",
                                                                                          recursive=True)}
    assert after == before
    assert MlflowRegistry(registry).get("stream-r1-student", "rerun-1").uri == registered.uri
