"""Build a Training Operator v1 ``PyTorchJob`` (``kubeflow.org/v1``) as a plain dict."""

from __future__ import annotations

from typing import Any

from stream_r1.ops.k8s import pod
from stream_r1.ops.k8s.spec import ClusterJobSpec

API_VERSION = "kubeflow.org/v1"
KIND = "PyTorchJob"
PLURAL = "pytorchjobs"
CONTAINER = "pytorch"  # the webhook requires a container of this name; the operator injects env into it
PORT_NAME = "pytorchjob-port"


def _replica(spec: ClusterJobSpec, replicas: int) -> dict[str, Any]:
    container = {
        "name": CONTAINER,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": spec.command(),
        "env": spec.env(),
        "ports": [{"name": PORT_NAME, "containerPort": spec.master_port, "protocol": "TCP"}],
        "resources": spec.resources(),
        "volumeMounts": pod.volume_mounts(spec),
        "securityContext": pod.container_security_context(),
    }
    return {
        "replicas": replicas,
        "restartPolicy": spec.restart_policy,
        "template": {
            "metadata": pod.pod_metadata(spec),
            "spec": {
                **pod.scheduling(spec),
                "securityContext": pod.pod_security_context(),
                "containers": [container],
                "volumes": pod.volumes(spec),
            },
        },
    }


def build_pytorchjob(spec: ClusterJobSpec) -> dict[str, Any]:
    """The PyTorchJob of a run: Master (1 replica) plus ``num_nodes - 1`` Workers.

    Args:
        spec: The run's cluster spec.

    Returns:
        A JSON-serialisable dict accepted by ``CustomObjectsApi.create_namespaced_custom_object``.
    """
    replica_specs: dict[str, Any] = {"Master": _replica(spec, 1)}
    if spec.num_nodes > 1:
        replica_specs["Worker"] = _replica(spec, spec.num_nodes - 1)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": spec.job_metadata(),
        "spec": {
            # A string: the operator also accepts auto|cpu|gpu; WORLD_SIZE = replicas x this.
            "nprocPerNode": str(spec.nproc_per_node),
            "runPolicy": {
                # Keep finished pods until the TTL so their logs stay readable after a failure.
                "cleanPodPolicy": "None",
                "backoffLimit": spec.backoff_limit,
                "activeDeadlineSeconds": spec.active_deadline_seconds,
                "ttlSecondsAfterFinished": spec.ttl_seconds_after_finished,
            },
            "pytorchReplicaSpecs": replica_specs,
        },
    }


def master_pod_selector(job_name: str) -> str:
    """Label selector of the master pod (labels set by the Training Operator v1)."""
    return f"training.kubeflow.org/job-name={job_name},training.kubeflow.org/replica-type=master"
