"""Build a Kubeflow Trainer v2 ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``, v2.3.0) as a plain dict.

The GPU pool's node selector, tolerations, volumes and mounts go into ``spec.runtimePatches`` (v2.2+
replaced ``podTemplateOverrides``), patching the runtime's replicated job ``node`` whose trainer
container is also named ``node`` (the runtime's naming). Restart/backoff behaviour of v2 belongs to the
referenced runtime's JobSet failure policy, not to the TrainJob.
"""

from __future__ import annotations

from typing import Any

from stream_r1.ops.k8s import pod
from stream_r1.ops.k8s.spec import ClusterJobSpec

API_GROUP = "trainer.kubeflow.org"
API_VERSION = f"{API_GROUP}/v1alpha1"
KIND = "TrainJob"
PLURAL = "trainjobs"
NODE = "node"  # replicated-job and container name reserved by the torch runtime
PATCH_MANAGER = "stream-r1.io/launcher"


def _pod_patch(spec: ClusterJobSpec) -> dict[str, Any]:
    return {
        "metadata": pod.pod_metadata(spec),
        "spec": {
            **pod.scheduling(spec),
            "securityContext": pod.pod_security_context(),
            "containers": [{"name": NODE, "volumeMounts": pod.volume_mounts(spec),
                            "securityContext": pod.container_security_context()}],
            "volumes": pod.volumes(spec),
        },
    }


def build_trainjob(spec: ClusterJobSpec) -> dict[str, Any]:
    """The TrainJob of a run (``numNodes`` nodes x ``numProcPerNode`` processes).

    Args:
        spec: The run's cluster spec.

    Returns:
        A JSON-serialisable dict accepted by ``CustomObjectsApi.create_namespaced_custom_object``.

    Raises:
        ValueError: ``priority_class`` is set (the v2.3 runtime patch has no ``priorityClassName``).
    """
    if spec.priority_class:
        raise ValueError(f"priority_class={spec.priority_class!r} cannot be set on a TrainJob (Trainer v2.3 runtime "
                         "patches have no priorityClassName); set it in the ClusterTrainingRuntime's pod template "
                         "or use backend=pytorchjob")
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": spec.job_metadata(),
        "spec": {
            "runtimeRef": {"name": spec.runtime_name, "kind": "ClusterTrainingRuntime", "apiGroup": API_GROUP},
            "trainer": {
                "image": spec.image,
                "command": spec.command(),
                "env": spec.env(),
                "numNodes": spec.num_nodes,
                "numProcPerNode": spec.nproc_per_node,
                "resourcesPerNode": spec.resources(),
            },
            "activeDeadlineSeconds": spec.active_deadline_seconds,
            "runtimePatches": [
                {
                    "manager": PATCH_MANAGER,
                    "trainingRuntimeSpec": {
                        "template": {
                            "spec": {
                                "replicatedJobs": [
                                    {"name": NODE, "template": {"spec": {"template": _pod_patch(spec)}}}
                                ]
                            }
                        }
                    },
                }
            ],
        },
    }


def master_pod_selector(job_name: str) -> str:
    """Label selector of the rank-0 pod (JobSet labels of the ``node`` replicated job, index 0)."""
    return (f"jobset.sigs.k8s.io/jobset-name={job_name},jobset.sigs.k8s.io/replicatedjob-name={NODE},"
            "batch.kubernetes.io/job-completion-index=0")
