"""Step helpers: run ids, backend/registry selection, an existing --endpoint, the exit record."""

from __future__ import annotations

import pytest

from stream_r1.ops import steps
from stream_r1.ops.pipeline import s3_endpoint
from stream_r1.ops.store import ArtifactStore


def test_resolve_run_id_is_dns_safe():
    assert steps.resolve_run_id("", "9b1e_JOB.id") == "r-9b1e-job-id"
    assert steps.resolve_run_id("local-run-7", "ignored") == "local-run-7"
    assert len(steps.resolve_run_id("", "x" * 100)) <= 48
    with pytest.raises(ValueError, match="no run id"):
        steps.resolve_run_id("", "")


@pytest.mark.parametrize("bad", ["Local-Run 7", "../../etc", "a/b", "x" * 49, "run: {x}", "7up", "a-", "a\nb"])
def test_a_given_run_id_is_validated_not_rewritten(bad):
    # The user's id names the job, the PVC directory and the S3 prefix: a silently rewritten id would
    # make the summary, the registry and the bucket disagree about which run is which.
    with pytest.raises(ValueError, match=r"not a valid run id.*lower-case letters"):
        steps.resolve_run_id(bad, "job-id")


def test_credentials_from_env_accepts_aws_endpoint_url():
    from stream_r1.ops.store import credentials_from_env

    creds = credentials_from_env({"AWS_ENDPOINT_URL": "https://s3.example:9000", "AWS_ACCESS_KEY_ID": "a",
                                  "AWS_SECRET_ACCESS_KEY": "b"})
    assert (creds.endpoint, creds.secure) == ("s3.example:9000", True)
    with pytest.raises(ValueError, match="STREAM_R1_S3_ENDPOINT"):
        credentials_from_env({"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"})


def test_backend_and_registry_selection(tmp_path):
    assert steps.make_backend("local").name == "local"
    with pytest.raises(ValueError, match="local, pytorchjob, trainjob"):
        steps.make_backend("slurm")
    with pytest.raises(ValueError, match="mlflow, kubeflow"):
        steps.make_registry("wandb", "x")
    # The Kubeflow Model Registry backend (Kubernetes part) is reached through the same selector.
    with pytest.raises(ValueError, match="not an http"):
        steps.make_registry("kubeflow", "sqlite:///x.db")


@pytest.mark.s3
def test_existing_endpoint_uses_env_keys_and_record_exit(seaweed, monkeypatch, tmp_path, bucket_name):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_key)
    with s3_endpoint(seaweed.url, tmp_path / "unused") as creds:
        assert creds == seaweed
        ArtifactStore(creds, bucket_name).ensure_bucket()
    assert not (tmp_path / "unused").exists()  # no server was started
    for k, v in seaweed.env().items():
        monkeypatch.setenv(k, v)
    rec = steps.record_exit({"state": "SUCCEEDED"}, "r9", bucket_name, "local")
    assert rec["status_uri"] == f"s3://{bucket_name}/runs/r9/status.json" and "cancelled_job" not in rec
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    bad = steps.record_exit({"state": "FAILED"}, "r9", bucket_name, "local")
    assert "StoreAuthError" in bad["store_error"]  # the exit handler reports, never raises


def test_record_exit_on_cluster_backend_reports_cleanup_problems(monkeypatch):
    """Outside a cluster the PyTorchJob backend cannot reach an API: the exit record says so and does not raise."""
    for k in ("STREAM_R1_S3_ENDPOINT", "AWS_ENDPOINT_URL", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(k, raising=False)
    rec = steps.record_exit({"state": "FAILED"}, "r10", "b", "pytorchjob")
    assert "cancel_error" in rec and "store_error" in rec and rec["state"] == "FAILED"
