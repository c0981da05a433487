"""manifests/: kustomize renders offline, every object validates, the PyTorchJob equals the launcher's."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stream_r1.commands import k8s_manifest
from stream_r1.ops.k8s import validate
from stream_r1.ops.k8s.launcher import DEFAULT_TRAIN_IMAGE
from stream_r1.ops.k8s.profiles import PROFILES, profile_spec
from stream_r1.ops.k8s.pytorchjob import build_pytorchjob

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
OVERLAYS = ("gpu-8x", "dev")
CORE_KINDS = {"ServiceAccount", "Role", "RoleBinding", "PersistentVolumeClaim", "Deployment", "Service", "Job",
              "NetworkPolicy",
              "Namespace"}


def _render(overlay: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: cannot render kustomize overlays offline")
    out = subprocess.run([kubectl, "kustomize", str(MANIFESTS / "overlays" / overlay)], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request):
    """An overlay's install objects plus its ``train/`` PyTorchJob, as one list."""
    return request.param, _render(request.param) + _render(f"{request.param}/train")


def _images(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "image" and isinstance(v, str):
                yield v
            else:
                yield from _images(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _images(v)


def test_install_overlay_starts_no_training():
    for overlay in OVERLAYS:
        assert "PyTorchJob" not in {o["kind"] for o in _render(overlay)}


def test_core_objects_validate_strictly(rendered):
    _, objs = rendered
    kinds = {o["kind"] for o in objs}
    assert {"ServiceAccount", "Role", "RoleBinding", "PersistentVolumeClaim", "NetworkPolicy", "PyTorchJob"} <= kinds
    assert "Secret" not in kinds and "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    for o in objs:
        if o["kind"] in CORE_KINDS:
            assert validate.core_errors(o) == [], o["kind"]
        else:
            assert o["kind"] in {"PyTorchJob", "Tensorboard"}, f"unexpected kind {o['kind']}"


def test_jobs_validate_against_crd_and_equal_the_launcher_build(rendered, schema_dir):
    overlay, objs = rendered
    jobs = [o for o in objs if o["kind"] == "PyTorchJob"]
    assert len(jobs) == 1
    assert validate.job_errors(jobs[0], schema_dir) == []
    expected = build_pytorchjob(profile_spec(overlay, image=DEFAULT_TRAIN_IMAGE, run_id="manual"))
    assert jobs[0] == expected
    ns = PROFILES[overlay]["cluster"]["namespace"]
    assert all(o["metadata"].get("namespace", ns) == ns for o in objs if o["kind"] != "Namespace")
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    pod = jobs[0]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert ("PersistentVolumeClaim", pod["volumes"][1]["persistentVolumeClaim"]["claimName"]) in names
    assert ("ServiceAccount", pod["serviceAccountName"]) in names


def test_generated_files_are_current(tmp_path):
    for overlay in OVERLAYS:
        out = tmp_path / f"{overlay}.yaml"
        args = argparse.Namespace(profile=overlay, kind="pytorchjob", image=None, run_id="manual", namespace=None,
                                  output=str(out))
        assert k8s_manifest.run(args) == 0
        checked_in = MANIFESTS / "overlays" / overlay / "train" / "pytorchjob.yaml"
        assert out.read_text() == checked_in.read_text(), (
            f"{checked_in} is stale: run `stream-r1 k8s-manifest --profile {overlay} -o {checked_in}`")


def test_rbac_is_exactly_what_the_launcher_needs(rendered):
    _, objs = rendered
    role = next(o for o in objs if o["kind"] == "Role")
    got = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
           for v in rule["verbs"]}
    job_verbs = ("create", "get", "list", "watch", "delete")
    want = {("kubeflow.org", "pytorchjobs", v) for v in job_verbs}
    want |= {("trainer.kubeflow.org", "trainjobs", v) for v in job_verbs}
    want |= {("", "pods", v) for v in ("get", "list", "watch")} | {("", "pods/log", "get")}
    want |= {("", "events", "list"), ("argoproj.io", "workflows", "get")}  # fail-fast quotes; cancel vs drain
    assert got == want
    binding = next(o for o in objs if o["kind"] == "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "stream-r1-launcher",
                                    "namespace": role["metadata"]["namespace"]}]
    train_sa = next(o for o in objs if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == "stream-r1-train")
    assert train_sa["automountServiceAccountToken"] is False


def _tensorboard_deployments(objs: list[dict]) -> list[dict]:
    return [o for o in objs if o["kind"] == "Deployment"
            and o["metadata"]["labels"].get("app.kubernetes.io/component") == "tensorboard"]


def test_tensorboard_reads_the_runs_pvc(rendered):
    _, objs = rendered
    pvcs = {o["metadata"]["name"] for o in objs if o["kind"] == "PersistentVolumeClaim"}
    for dep in _tensorboard_deployments(objs):
        vol = dep["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]
        assert vol["claimName"] in pvcs and vol["readOnly"] is True
    for cr in (o for o in objs if o["kind"] == "Tensorboard"):  # minimal structural check of the Kubeflow CR
        assert cr["apiVersion"] == "tensorboard.kubeflow.org/v1alpha1" and cr["metadata"]["name"]
        assert set(cr["spec"]) == {"logspath"}
        scheme, _, rest = cr["spec"]["logspath"].partition("://")
        assert scheme == "pvc" and rest.split("/")[0] in pvcs


def test_tensorboard_is_reachable_only_through_an_authenticated_path(rendered):
    # TensorBoard has no login: no other pod of the namespace may reach it. Without Kubeflow it listens on
    # the pod's loopback behind a deny-all policy (the way in is `kubectl port-forward`, an RBAC verb);
    # with Kubeflow only the Tensorboard resource runs, reachable from the authenticating gateway alone.
    overlay, objs = rendered
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    assert not [o for o in objs if o["kind"] == "Service" and "tensorboard" in o["metadata"]["name"]]
    crs = [o for o in objs if o["kind"] == "Tensorboard"]
    deps = _tensorboard_deployments(objs)
    assert len(crs) + len(deps) == 1, overlay
    for dep in deps:
        command = dep["spec"]["template"]["spec"]["containers"][0]["command"]
        assert command[command.index("--host") + 1] == "127.0.0.1"
        labels = dep["spec"]["template"]["metadata"]["labels"]
        guard = [p for p in policies if p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()]
        assert guard and all(p["spec"]["policyTypes"] == ["Ingress"] and p["spec"]["ingress"] == [] for p in guard)
    for cr in crs:
        guard = [p for p in policies if p["spec"]["podSelector"]["matchLabels"] == {"app": cr["metadata"]["name"]}]
        assert len(guard) == 1 and guard[0]["spec"]["ingress"] == [{"from": [{"namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": "istio-system"}}}]}]


def test_every_image_is_pinned_and_known(rendered):
    _, objs = rendered
    images = set(_images(objs))
    assert images <= {DEFAULT_TRAIN_IMAGE, "ghcr.io/stream-r1/stream-r1-ops:0.1.0"}, images


def test_secret_template_holds_no_credentials_and_is_not_deployed():
    template = yaml.safe_load((MANIFESTS / "base" / "secret-s3.template.yaml").read_text())
    assert template["kind"] == "Secret" and set(template["stringData"]) == {
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"}
    assert all(v == "" for v in template["stringData"].values()) and "data" not in template
    assert validate.core_errors(template) == []
    for kustomization in MANIFESTS.rglob("kustomization.yaml"):
        assert "secret-s3.template.yaml" not in yaml.safe_load(kustomization.read_text()).get("resources", [])


def test_pvc_dev_patch_and_recurring_run_example(rendered):
    overlay, objs = rendered
    pvc = next(o for o in objs if o["kind"] == "PersistentVolumeClaim")
    size = pvc["spec"]["resources"]["requests"]["storage"]
    assert (size, pvc["spec"]["accessModes"]) == (("20Gi", ["ReadWriteOnce"]) if overlay == "dev"
                                                  else ("2Ti", ["ReadWriteMany"]))
    out = subprocess.run([sys.executable, str(MANIFESTS / "examples" / "recurring_run.py"), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--cron" in out.stdout


def test_cluster_training_runtime_validates(schema_dir):
    objs = _render("../cluster")
    assert [o["kind"] for o in objs] == ["ClusterTrainingRuntime"]
    rt = objs[0]
    assert validate.crd_errors(rt, schema_dir) == []
    assert "namespace" not in rt["metadata"]  # cluster-scoped
    job = rt["spec"]["template"]["spec"]["replicatedJobs"][0]
    assert job["name"] == "node" and rt["spec"]["template"]["spec"]["failurePolicy"]["maxRestarts"] == 3
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": job["template"]["spec"]["template"]["spec"]}
    assert validate.core_errors(pod) == []
    assert set(_images(objs)) == {DEFAULT_TRAIN_IMAGE}
