"""Cluster policy: Pod Security "restricted" on every pod template, Kueue/priority, NCCL env, unused secrets,
and CRD validation that rejects unknown fields at every level."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from stream_r1.ops.k8s import validate, webhook_rules
from stream_r1.ops.k8s.pod_security import restricted_violations
from stream_r1.ops.k8s.profiles import PROFILES, profile_spec
from stream_r1.ops.k8s.pytorchjob import build_pytorchjob
from stream_r1.ops.k8s.spec import KUEUE_QUEUE_LABEL, NCCL_ENV
from stream_r1.ops.k8s.trainjob import build_trainjob
from tests.k8s.conftest import TRAIN_IMAGE, make_spec

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def pod_specs(obj, path=""):
    """Every pod spec inside an object: any mapping with a ``containers`` list (Deployment, Job, PyTorchJob
    replicas, ClusterTrainingRuntime replicated jobs, TrainJob runtime patches)."""
    if isinstance(obj, dict):
        if isinstance(obj.get("containers"), list):
            yield path, obj
        for k, v in obj.items():
            yield from pod_specs(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from pod_specs(v, f"{path}[{i}]")


def _render_all() -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: cannot render kustomize overlays offline")
    targets = ["cluster", *(f"overlays/{o}" for o in PROFILES), *(f"overlays/{o}/train" for o in PROFILES)]
    objs = []
    for t in targets:
        out = subprocess.run([kubectl, "kustomize", str(MANIFESTS / t)], check=True, capture_output=True, text=True,
                             timeout=60).stdout
        objs += [d for d in yaml.safe_load_all(out) if d]
    return objs


def _launcher_jobs() -> list[dict]:
    jobs = []
    for nodes in (1, 2, 4):
        jobs.append(build_pytorchjob(make_spec(num_nodes=nodes, queue_name="gpu-queue", priority_class="training")))
        jobs.append(build_trainjob(make_spec(num_nodes=nodes, queue_name="gpu-queue")))
    jobs += [build_pytorchjob(profile_spec(p, image=TRAIN_IMAGE)) for p in PROFILES]
    return jobs


def test_every_pod_template_passes_pod_security_restricted():
    objs = _render_all() + _launcher_jobs()
    checked = 0
    for obj in objs:
        for path, spec in pod_specs(obj):
            assert restricted_violations(spec, f"{obj['kind']}/{obj['metadata']['name']}{path}") == []
            checked += 1
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "Job", "PyTorchJob", "TrainJob", "ClusterTrainingRuntime"} <= kinds
    assert checked >= 15  # masters, workers, runtime, patches, tensorboard (dev only), tiny-checkpoints job


def test_the_dev_namespace_enforces_restricted():
    (ns,) = [o for o in _render_all() if o["kind"] == "Namespace"]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize(("mutate", "needle"), [
    (lambda p, c: c["securityContext"].pop("capabilities"), "capabilities.drop must include ALL"),
    (lambda p, c: c["securityContext"].update(allowPrivilegeEscalation=True), "allowPrivilegeEscalation"),
    (lambda p, c: p["securityContext"].pop("seccompProfile"), "seccompProfile"),
    (lambda p, c: p["securityContext"].update(seccompProfile={"type": "Unconfined"}), "Unconfined"),
    (lambda p, c: p["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
    (lambda p, c: c["securityContext"].update(runAsNonRoot=False), "runAsNonRoot"),
    (lambda p, c: p["securityContext"].update(runAsUser=0), "runAsUser must not be 0"),
    (lambda p, c: c["securityContext"].update(privileged=True), "privileged"),
    (lambda p, c: c["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]), "SYS_ADMIN"),
    (lambda p, c: p.update(hostNetwork=True), "hostNetwork"),
    (lambda p, c: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
    (lambda p, c: c["ports"][0].update(hostPort=23456), "hostPort"),
    (lambda p, c: p["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]), "kernel.msgmax"),
    (lambda p, c: c["securityContext"].update(seLinuxOptions={"user": "root"}), "seLinuxOptions.user"),
    (lambda p, c: c["securityContext"].update(procMount="Unmasked"), "procMount"),
])
def test_pod_security_checker_catches_each_control(mutate, needle):
    spec = build_pytorchjob(make_spec())["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert restricted_violations(spec) == []
    bad = copy.deepcopy(spec)
    mutate(bad, bad["containers"][0])
    errors = restricted_violations(bad)
    assert errors and any(needle in e for e in errors), errors


def test_container_level_seccomp_and_non_root_also_satisfy_the_policy():
    spec = build_pytorchjob(make_spec())["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    moved = copy.deepcopy(spec)
    del moved["securityContext"]["seccompProfile"], moved["securityContext"]["runAsNonRoot"]
    moved["containers"][0]["securityContext"].update(seccompProfile={"type": "RuntimeDefault"}, runAsNonRoot=True)
    assert restricted_violations(moved) == []


def test_kueue_queue_priority_nccl_env_and_no_store_keys(schema_dir):
    job = build_pytorchjob(make_spec(num_nodes=2, queue_name="team-a-gpus", priority_class="training-high"))
    assert validate.job_errors(job, schema_dir) == []
    assert job["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "team-a-gpus"
    for rtype in ("Master", "Worker"):
        pod = job["spec"]["pytorchReplicaSpecs"][rtype]["template"]
        assert pod["spec"]["priorityClassName"] == "training-high"
        assert KUEUE_QUEUE_LABEL not in pod["metadata"]["labels"]  # Kueue reads the job's label, not the pods'
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert {k: env[k] for k in NCCL_ENV} == NCCL_ENV
        assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1" and env["NCCL_DEBUG"] == "WARN"
        assert not any(k.startswith("AWS_") for k in env)
    plain = build_pytorchjob(make_spec())
    assert KUEUE_QUEUE_LABEL not in plain["metadata"]["labels"]
    assert "priorityClassName" not in plain["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]

    tj = build_trainjob(make_spec(num_nodes=2, queue_name="team-a-gpus"))
    assert validate.job_errors(tj, schema_dir) == []
    assert tj["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "team-a-gpus"
    assert {e["name"] for e in tj["spec"]["trainer"]["env"]} >= set(NCCL_ENV)
    with pytest.raises(ValueError, match=r"priority_class.*TrainJob"):
        build_trainjob(make_spec(priority_class="training-high"))
    with pytest.raises(ValueError, match="queue_name"):
        make_spec(queue_name="not a label!")


@pytest.mark.parametrize("nodes", [2, 4])
def test_multi_node_jobs_validate(schema_dir, nodes):
    job = build_pytorchjob(make_spec(num_nodes=nodes))
    assert validate.job_errors(job, schema_dir) == []
    assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == nodes - 1
    master = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
    assert master[:3] == ["torchrun", "--nnodes", f"{nodes}:{nodes}"]
    tj = build_trainjob(make_spec(num_nodes=nodes))
    assert validate.job_errors(tj, schema_dir) == []
    assert tj["spec"]["trainer"]["numNodes"] == nodes and tj["spec"]["trainer"]["command"][2] == f"{nodes}:{nodes}"


def test_crd_validation_rejects_unknown_fields_at_every_level(schema_dir):
    job = build_pytorchjob(make_spec(num_nodes=2))
    typo = copy.deepcopy(job)
    typo["spec"]["runPolicy"]["backoffLimits"] = 3
    assert validate.crd_errors(typo, schema_dir) == ["spec.runPolicy: unknown field 'backoffLimits'"]
    deep = copy.deepcopy(job)
    deep["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    deep["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["metadata"]["label"] = {}
    deep["metadata"]["label"] = {}
    deep["spec"]["nprocPerNodes"] = "8"
    assert sorted(validate.crd_errors(deep, schema_dir)) == sorted([
        "metadata: unknown field 'label'",
        "spec: unknown field 'nprocPerNodes'",
        "spec.pytorchReplicaSpecs.Master.template.metadata: unknown field 'label'",
        "spec.pytorchReplicaSpecs.Worker.template.spec.containers[0]: unknown field 'volumeMount'",
    ])
    tj = build_trainjob(make_spec())
    tj["spec"]["trainer"]["numNode"] = 1
    tj["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"][
        "spec"]["template"]["spec"]["priorityClassName"] = "x"  # not patchable in v2.3
    errors = validate.crd_errors(tj, schema_dir)
    assert "spec.trainer: unknown field 'numNode'" in errors
    assert any(e.endswith("unknown field 'priorityClassName'") for e in errors), errors


def test_cleanpodpolicy_and_restartpolicy_values_are_checked(schema_dir):
    job = build_pytorchjob(make_spec())
    job["spec"]["runPolicy"]["cleanPodPolicy"] = "Sometimes"
    job["spec"]["pytorchReplicaSpecs"]["Master"]["restartPolicy"] = "OnError"
    errors = validate.job_errors(job, schema_dir)
    assert any("cleanPodPolicy='Sometimes' is not one of None, Running, All" in e for e in errors), errors
    assert any("Master.restartPolicy='OnError'" in e for e in errors), errors
    with pytest.raises(ValueError, match="cleanPodPolicy"):
        webhook_rules.check(job)


def test_pods_are_kept_after_failure():
    job = build_pytorchjob(make_spec())
    assert job["spec"]["runPolicy"]["cleanPodPolicy"] == "None"  # logs of a failed job stay readable
