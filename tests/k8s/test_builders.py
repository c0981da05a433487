"""PyTorchJob / TrainJob builders: CRD schemas, admission rules, strict pod templates, spec checks."""

from __future__ import annotations

import copy
import json

import pytest

from stream_r1.ops.jobs.base import TrainJobRequest
from stream_r1.ops.k8s import validate, webhook_rules
from stream_r1.ops.k8s.pytorchjob import build_pytorchjob
from stream_r1.ops.k8s.spec import ClusterJobSpec, job_name_for
from stream_r1.ops.k8s.trainjob import build_trainjob
from tests.k8s.conftest import TRAIN_IMAGE, make_spec


@pytest.mark.parametrize("nodes", [1, 3])
def test_pytorchjob_validates_against_crd_webhook_and_strict_pod(schema_dir, nodes):
    job = build_pytorchjob(make_spec(num_nodes=nodes))
    assert validate.job_errors(job, schema_dir) == []
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1
    assert ("Worker" in specs) == (nodes > 1)
    if nodes > 1:
        assert specs["Worker"]["replicas"] == nodes - 1
    assert job["spec"]["nprocPerNode"] == "8"
    c = specs["Master"]["template"]["spec"]["containers"][0]
    assert c["name"] == "pytorch"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "8"
    cmd = c["command"]
    assert cmd[:5] == ["torchrun", "--nnodes", f"{nodes}:{nodes}", "--nproc-per-node", "8"]
    assert cmd[cmd.index("--rdzv-backend") + 1] == "c10d" and cmd[cmd.index("--max-restarts") + 1] == "3"
    assert cmd[cmd.index("--rdzv-endpoint") + 1] == "$(PET_MASTER_ADDR):$(PET_MASTER_PORT)"
    assert cmd[cmd.index("-m"):] == ["-m", "stream_r1", *TrainJobRequest(
        run_id="x", config="wan2.1_t2v_1.3b_stream_r1", output_dir="/mnt/runs/8f2c1e0a-KFP_run",
        overrides=("train.num_steps=1000",)).train_args()]
    assert "--resume" in c["command"] and c["command"][c["command"].index("--resume") + 1] == "auto"
    pod = specs["Master"]["template"]["spec"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}} in pod["volumes"]
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert specs["Master"]["restartPolicy"] == "OnFailure"
    run_policy = job["spec"]["runPolicy"]
    assert run_policy["backoffLimit"] == 3 and run_policy["activeDeadlineSeconds"] == 172800
    env = {e["name"]: e for e in c["env"]}
    assert not any(k.startswith("AWS_") for k in env)  # the job reads only the PVC: no store keys in GPU pods
    json.dumps(job)  # plain JSON-serialisable dict


def test_s3_credentials_only_from_a_named_secret(schema_dir):
    job = build_pytorchjob(make_spec(s3_secret_name="team-s3"))
    assert validate.job_errors(job, schema_dir) == []
    env = {e["name"]: e for e in job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "team-s3", "key": "AWS_SECRET_ACCESS_KEY"}
    assert "value" not in env["AWS_SECRET_ACCESS_KEY"]  # never a literal credential


def test_trainjob_validates_against_crd_and_cel_rules(schema_dir):
    job = build_trainjob(make_spec(num_nodes=2))
    assert validate.job_errors(job, schema_dir) == []
    trainer = job["spec"]["trainer"]
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 8
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    assert job["spec"]["runtimeRef"]["name"] == "torch-distributed"
    patch = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    pod = patch["template"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["containers"][0]["name"] == "node"
    assert {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]} == {"/dev/shm", "/mnt/runs"}
    (effective,) = validate.pod_templates(job)  # the node pod, strictly validated inside job_errors
    assert effective["spec"]["containers"][0]["image"] == TRAIN_IMAGE
    assert effective["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"


def test_schema_rejects_bad_field_types(schema_dir):
    job = build_pytorchjob(make_spec())
    bad = copy.deepcopy(job)
    bad["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = "one"
    assert any("replicas" in e for e in validate.crd_errors(bad, schema_dir))
    tj = build_trainjob(make_spec())
    tj["spec"]["trainer"]["numNodes"] = "2"
    assert any("numNodes" in e for e in validate.crd_errors(tj, schema_dir))


def test_strict_pod_validation_catches_typos():
    template = build_pytorchjob(make_spec())["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    from stream_r1.ops.k8s.pod import as_pod

    assert validate.core_errors(as_pod(template)) == []
    template["spec"]["containers"][0]["volumeMount"] = []  # misspelled key
    assert validate.core_errors(as_pod(template))


def test_webhook_rules_reject_what_the_operator_would():
    job = build_pytorchjob(make_spec(num_nodes=2))
    assert webhook_rules.pytorchjob_errors(job) == []
    bad = copy.deepcopy(job)
    bad["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = 2
    bad["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["name"] = "main"
    bad["spec"]["pytorchReplicaSpecs"]["Chief"] = copy.deepcopy(job["spec"]["pytorchReplicaSpecs"]["Master"])
    bad["spec"]["pytorchReplicaSpecs"]["Chief"]["template"]["spec"]["containers"][0]["image"] = ""
    bad["spec"]["elasticPolicy"] = {"nProcPerNode": 8}
    bad["metadata"]["name"] = "Bad_Name"
    errors = " | ".join(webhook_rules.pytorchjob_errors(bad))
    for needle in ("Master.replicas", "no container named 'pytorch'", "Chief", "image must be set",
                   "nProcPerNode", "RFC 1035"):
        assert needle in errors
    with pytest.raises(ValueError, match="would be rejected"):
        webhook_rules.check(bad)
    tj = build_trainjob(make_spec())
    tj["metadata"]["name"] = "x" * 70
    assert any("63" in e for e in webhook_rules.trainjob_errors(tj))


def test_job_name_is_dns1035_deterministic_and_short():
    a = job_name_for("stream-r1", "8F2C1E0A_1234-5678-90ab-cdef-1234567890ab-extra-long-suffix")
    assert a == job_name_for("stream-r1", "8F2C1E0A_1234-5678-90ab-cdef-1234567890ab-extra-long-suffix")
    assert len(a) <= 48 and a.startswith("stream-r1-8f2c1e0a-1234")
    with pytest.raises(ValueError, match="run_id"):
        job_name_for("stream-r1", "___")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"image": "ghcr.io/stream-r1/stream-r1-train:latest"}, "pinned"),
        ({"image": "ghcr.io/stream-r1/stream-r1-train"}, "pinned"),
        ({"nproc_per_node": 16}, "exceeds gpus_per_node"),
        ({"namespace": "Bad_NS"}, "namespace"),
    ],
)
def test_spec_rejects_bad_settings(kw, match):
    request = TrainJobRequest(run_id="r1", config="tiny_cpu", output_dir="/mnt/runs/r1")
    kw = {"image": TRAIN_IMAGE, **kw}
    with pytest.raises(ValueError, match=match):
        ClusterJobSpec.from_request(request, **kw)


def test_spec_requires_output_on_the_pvc_and_resume_auto():
    with pytest.raises(ValueError, match="not under the PVC mount"):
        ClusterJobSpec.from_request(TrainJobRequest(run_id="r1", config="c", output_dir="/tmp/r1"), image=TRAIN_IMAGE)
    with pytest.raises(ValueError, match="resume"):
        ClusterJobSpec.from_request(
            TrainJobRequest(run_id="r1", config="c", output_dir="/mnt/runs/r1", resume="/mnt/runs/r1/ckpt-5"),
            image=TRAIN_IMAGE)


def test_cpu_only_spec_has_no_gpu_limit(schema_dir):
    spec = make_spec(gpus_per_node=0, node_selector={}, tolerations=(), cpu_per_node="2", memory_per_node="8Gi")
    job = build_pytorchjob(spec)
    assert validate.job_errors(job, schema_dir) == []
    c = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in c["resources"]["limits"] and job["spec"]["nprocPerNode"] == "1"
    assert "nodeSelector" not in job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]


def test_pytorchjob_round_trips_through_the_typed_sdk_models():
    """kubeflow-training 1.9.4's typed models drop unknown keys, so a lossless round trip means every
    field name of the manifest is one the v1 API knows (works without the CRD files)."""
    from kubeflow.training.api_client import ApiClient

    job = build_pytorchjob(make_spec(num_nodes=2))

    class _Response:
        data = json.dumps(job)

    client = ApiClient()
    typed = client.deserialize(_Response(), "KubeflowOrgV1PyTorchJob")
    assert typed.spec.pytorch_replica_specs["Worker"].replicas == 1 and typed.spec.nproc_per_node == "8"
    assert client.sanitize_for_serialization(typed) == job
