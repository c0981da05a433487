"""Pod-level pieces shared by the PyTorchJob and TrainJob builders (core/v1 dicts)."""

from __future__ import annotations

from typing import Any

from stream_r1.ops.k8s.spec import ClusterJobSpec

SHM_VOLUME = "dshm"
RUNS_VOLUME = "runs"
NON_ROOT_UID = 1000  # the `stream` user of images/train/Dockerfile


def volumes(spec: ClusterJobSpec) -> list[dict[str, Any]]:
    """A memory-backed ``/dev/shm`` and the runs PVC."""
    return [
        {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}},
        {"name": RUNS_VOLUME, "persistentVolumeClaim": {"claimName": spec.pvc_name}},
    ]


def volume_mounts(spec: ClusterJobSpec) -> list[dict[str, Any]]:
    """Mounts matching :func:`volumes`."""
    return [
        {"name": SHM_VOLUME, "mountPath": "/dev/shm"},
        {"name": RUNS_VOLUME, "mountPath": spec.pvc_mount_path},
    ]


def pod_security_context() -> dict[str, Any]:
    """Run as the image's non-root user under the runtime's seccomp profile (Pod Security "restricted",
    :mod:`stream_r1.ops.k8s.pod_security`); the PVC is group-writable through ``fsGroup``."""
    return {"runAsNonRoot": True, "runAsUser": NON_ROOT_UID, "runAsGroup": NON_ROOT_UID, "fsGroup": NON_ROOT_UID,
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_security_context() -> dict[str, Any]:
    """No privilege escalation and no Linux capabilities: training needs none (NCCL over sockets or
    InfiniBand verbs through the device plugin works unprivileged)."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def scheduling(spec: ClusterJobSpec) -> dict[str, Any]:
    """Pod-spec keys that place the pod on the GPU pool (empty selector/tolerations are left out)."""
    out: dict[str, Any] = {"serviceAccountName": spec.service_account}
    if spec.priority_class:
        out["priorityClassName"] = spec.priority_class
    if spec.node_selector:
        out["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        out["tolerations"] = [dict(t) for t in spec.tolerations]
    if spec.image_pull_secrets:
        out["imagePullSecrets"] = [{"name": n} for n in spec.image_pull_secrets]
    return out


def pod_metadata(spec: ClusterJobSpec) -> dict[str, Any]:
    """Pod labels, and no Istio sidecar: it would keep a finished pod Running and break NCCL ports."""
    return {"labels": dict(spec.labels), "annotations": {"sidecar.istio.io/inject": "false"}}


def as_pod(template: dict[str, Any], name: str = "validate") -> dict[str, Any]:
    """Wrap a pod template into a ``v1/Pod`` (for ``kubernetes-validate`` in strict mode)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **template.get("metadata", {})},
        "spec": template["spec"],
    }
