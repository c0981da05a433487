"""gate, register_model and on_exit: ``.python_func`` on real files/registry/S3, and an ExitHandler run locally."""

import json

import pytest
from kfp import dsl

from stream_r1.ops.registry.base import ModelVersionInfo
from stream_r1.ops.registry.mlflow_registry import MlflowRegistry
from stream_r1.ops.store import ArtifactStore


def _metrics(tmp_path, **values) -> dsl.Metrics:
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({**values, "label": "not a number", "complete": False}))
    return dsl.Metrics(uri=str(path))


def test_gate_threshold_and_not_worse_than_registered(tmp_path, registry_db):
    from components.gate.component import gate

    db = str(registry_db)
    kw = {"metric": "reward_overall", "registry": "mlflow", "registry_uri": db, "model_name": "m"}
    assert gate.python_func(metrics=_metrics(tmp_path, reward_overall=0.4), min_value=0.0, **kw) is True
    assert gate.python_func(metrics=_metrics(tmp_path, reward_overall=0.4), min_value=0.5, **kw) is False
    MlflowRegistry(db).register(ModelVersionInfo(name="m", version="old", uri="s3://b/old",
                                                 metrics={"reward_overall": 0.6}))
    assert gate.python_func(metrics=_metrics(tmp_path, reward_overall=0.5), min_value=0.0, **kw) is False
    assert gate.python_func(metrics=_metrics(tmp_path, reward_overall=0.7), min_value=0.0, **kw) is True
    with pytest.raises(ValueError, match="gate metric 'reward_overall' is not in the evaluation metrics"):
        gate.python_func(metrics=_metrics(tmp_path, other=1.0), min_value=0.0, **kw)


def test_register_model_records_lineage_idempotently(tmp_path, registry_db, monkeypatch):
    from components.register_model.component import register_model

    kw = {"export_uri": "s3://b/runs/r7/export/0123456789abcdef", "config_hash": "c0ffee",
          "metrics": _metrics(tmp_path, reward_overall=0.25, fps=12.0), "registry": "mlflow",
          "registry_uri": str(registry_db), "model_name": "stream-r1-student", "data_revision": "git:abc",
          "run_id": "r7", "kfp_run_id": "0b9a6c2e-5f3d-4c1a-9e7b-2d8f6a4c1e90", "kfp_run_name": "weekly-20261122"}
    monkeypatch.setenv("STREAM_R1_POD_NAMESPACE", "team-video")  # the downward API env of the step's pod
    first = register_model.python_func(**kw)
    assert first == "stream-r1-student:r7 -> s3://b/runs/r7/export/0123456789abcdef"
    assert register_model.python_func(**kw) == first  # a retried task does not create a second version
    info = MlflowRegistry(registry_db).get("stream-r1-student", "r7")
    assert (info.config_hash, info.data_revision, info.run_id) == ("c0ffee", "git:abc", "r7")
    assert (info.kfp_run_id, info.kfp_run_name, info.namespace) == (
        "0b9a6c2e-5f3d-4c1a-9e7b-2d8f6a4c1e90", "weekly-20261122", "team-video")
    assert info.metrics == {"reward_overall": 0.25, "fps": 12.0}
    # The same version label with other bytes (another export prefix) is refused: versions are immutable.
    with pytest.raises(ValueError, match=r"already registered .* versions are immutable"):
        register_model.python_func(**{**kw, "export_uri": "s3://b/runs/r7/export/fedcba9876543210"})
    assert MlflowRegistry(registry_db).get("stream-r1-student", "r7").uri == info.uri
    with pytest.raises(ValueError, match="not an s3:// URI"):
        register_model.python_func(**{**kw, "export_uri": ""})


@pytest.mark.s3
def test_on_exit_python_func_writes_status(s3_env, bucket_name):
    from components.on_exit.component import on_exit

    status = dsl.PipelineTaskFinalStatus(state="FAILED", pipeline_job_resource_name="jobs/123",
                                         pipeline_task_name="train", error_code=2, error_message="boom")
    assert on_exit.python_func(status=status, run_id="", job_id="123", bucket=bucket_name, backend="local") == "FAILED"
    record = ArtifactStore(s3_env, bucket_name).get_json("runs/r-123/status.json")
    assert record["state"] == "FAILED" and record["failed_task"] == "train" and record["error_message"] == "boom"


@pytest.mark.s3
@pytest.mark.slow
def test_exit_handler_records_failure_kfp_local(s3_env, bucket_name, tmp_path, kfp_local):
    """A failing fetch (missing source) inside the ExitHandler: the exit task still runs and records FAILED."""
    from components.fetch_checkpoints.component import fetch_checkpoints
    from components.on_exit.component import on_exit

    @dsl.pipeline(name="exit-check")
    def failing(source: str, bucket: str):
        done = on_exit(run_id="exit-1", job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, bucket=bucket, backend="local")
        with dsl.ExitHandler(done):
            fetch_checkpoints(source=source, bucket=bucket, run_id="exit-1", job_id="")

    with pytest.raises(RuntimeError):
        failing(source=str(tmp_path / "does-not-exist"), bucket=bucket_name)
    record = ArtifactStore(s3_env, bucket_name).get_json("runs/exit-1/status.json")
    assert record["state"] == "FAILED"
