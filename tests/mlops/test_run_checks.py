"""The validation step: settings that cannot work fail first, each named with its fix; good settings pass
(the store check against a real SeaweedFS)."""

from __future__ import annotations

import pytest

from stream_r1.ops.k8s.launcher import cluster_settings
from stream_r1.ops.run_checks import RunSettings, check_run, validate_run
from stream_r1.ops.seaweed import S3Credentials

POD = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
GOOD = RunSettings(config="wan2.1_t2v_1.3b_stream_r1", backend="pytorchjob", registry="kubeflow",
                   registry_uri="http://model-registry-service.kubeflow.svc.cluster.local:8080",
                   eval_prompts="vbench_extended", job_id="0b9a6c2e-5f3d-4c1a-9e7b-2d8f6a4c1e90",
                   num_nodes=1, gpus_per_node=8, cluster=cluster_settings({}, image="ghcr.io/stream-r1/stream-r1-train:0.1.0"))


def _errors(environ=None, **changes):
    from dataclasses import replace

    return check_run(replace(GOOD, **changes), "stream-r1", POD if environ is None else environ)


def test_laptop_defaults_that_cannot_persist_or_run_in_a_pod_are_rejected():
    (err,) = _errors(registry="mlflow", registry_uri=".stream-r1/registry.db")
    assert "registry_uri='.stream-r1/registry.db' is a file inside this pod" in err and "registry=kubeflow" in err
    (err,) = _errors(registry_uri="sqlite:///registry.db")  # the scheduled-run bug: kubeflow + an SQLite URI
    assert "not a Kubeflow Model Registry address" in err and "http://model-registry-service" in err
    (err,) = _errors(backend="local", config="tiny_cpu", nproc_per_node=1)
    assert "backend='local'" in err and "pytorchjob" in err
    (err,) = _errors(eval_prompts="tests/assets/prompts/tiny.txt")
    assert "tests/" in err and "vbench_extended" in err


def test_node_counts_the_batch_cannot_split_fail_naming_the_arithmetic():
    (err,) = _errors(num_nodes=3)  # 24 ranks cannot split 64 prompts per optimizer step
    assert err.startswith("num_nodes=3 x 8 processes per node: world size 24 cannot split the recipe's batch")
    assert "use a world size in [1, 2, 4, 8, 16, 32, 64]" in err
    missing_secret = ["AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY not set: the step's S3 secret (stream-r1-s3) lacks "
                      "the keys; create it as docs/operations.md section 3 shows"]
    for nodes in (2, 4):  # the recipe runs on 1, 2 or 4 nodes of 8 (accumulation 8, 4, 2): only the secret is missing
        assert _errors(num_nodes=nodes) == missing_secret

def test_cluster_settings_are_built_offline():
    bad = cluster_settings({}, image="ghcr.io/stream-r1/stream-r1-train:latest", queue_name="bad queue!")
    errors = _errors(cluster=bad)
    assert any("must be pinned" in e for e in errors), errors
    (err,) = _errors(backend="trainjob", cluster={**GOOD.cluster, "priority_class": "high"})
    assert "priority_class='high' cannot be set on a TrainJob" in err
    (err,) = _errors(run_id="Run_1")
    assert "run_id='Run_1' is not a valid run id" in err and "'run-1'" in err


def test_every_problem_is_listed_at_once_before_anything_touches_the_network():
    errors = _errors(registry="mlflow", registry_uri="r.db", num_nodes=3, eval_prompts="./tests/x.txt")
    assert len(errors) == 3  # registry, prompts, batch split; the store is not tried while settings are wrong
    with pytest.raises(ValueError, match=r"cannot work as configured:\n  - ") as e:
        validate_run(RunSettings(**{**GOOD.__dict__, "registry": "mlflow", "registry_uri": "r.db"}), "b", POD)
    assert "registry_uri='r.db'" in str(e.value)


def test_run_local_settings_pass_outside_a_pod():
    local = RunSettings(config="tiny_cpu", backend="local", registry="mlflow", registry_uri="/tmp/w/registry.db",
                        eval_prompts="tiny", run_id="local-1", gpus_per_node=0, nproc_per_node=1)
    assert check_run(local, "stream-r1", {}) == []


@pytest.mark.s3
def test_store_keys_are_tried(seaweed: S3Credentials, bucket_name, monkeypatch):
    env = {**seaweed.env(), "KUBERNETES_SERVICE_HOST": "10.96.0.1"}
    for k, v in env.items():  # open_store reads its credentials from the process environment
        monkeypatch.setenv(k, v)
    assert validate_run(GOOD, bucket_name, env).startswith("ok: wan2.1_t2v_1.3b_stream_r1 on pytorchjob (8 ")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    (err,) = check_run(GOOD, bucket_name, {**env, "AWS_SECRET_ACCESS_KEY": "wrong"})
    assert err.startswith("artifact store: ")
