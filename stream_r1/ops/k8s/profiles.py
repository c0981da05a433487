"""Named cluster profiles: the settings behind the kubectl-deployable training manifests.

``manifests/overlays/<profile>/train/pytorchjob.yaml`` is generated from these with
``stream-r1 k8s-manifest``, so it is exactly what the launcher builds for the same preset (a test
re-renders and compares).
"""

from __future__ import annotations

from typing import Any

from stream_r1.ops.jobs.base import TrainJobRequest
from stream_r1.ops.k8s.spec import ClusterJobSpec
from stream_r1.utils.names import validate_run_id

PROFILES: dict[str, dict[str, Any]] = {
    # One 8-GPU node running the paper recipe (fits in 8x80 GB with FSDP2 full sharding: docs/training.md).
    "gpu-8x": {
        "config": "wan2.1_t2v_1.3b_stream_r1",
        "overrides": (),
        "cluster": {"namespace": "stream-r1", "num_nodes": 1, "gpus_per_node": 8, "nproc_per_node": 8},
    },
    # CPU-only smoke run of the tiny preset on any small cluster (kind, minikube): no GPU pool.
    "dev": {
        "config": "tiny_cpu",
        "overrides": ("checkpoints.root=/mnt/runs/tiny-checkpoints",),
        "cluster": {
            "namespace": "stream-r1-dev",
            "num_nodes": 1,
            "gpus_per_node": 0,
            "nproc_per_node": 2,
            "cpu_per_node": "2",
            "memory_per_node": "8Gi",
            "shm_size": "1Gi",
            "node_selector": {},
            "tolerations": (),
            "backoff_limit": 1,
            "active_deadline_seconds": 3600,
        },
    },
}


def profile_spec(profile: str, *, image: str, run_id: str = "manual", **cluster: Any) -> ClusterJobSpec:
    """The ClusterJobSpec of a named profile.

    Args:
        profile: ``gpu-8x`` or ``dev``.
        image: Training image (pinned tag or digest).
        run_id: Names the job (``stream-r1-<run_id>``) and its run directory ``/mnt/runs/<run_id>``.
        **cluster: Overrides of the profile's cluster settings.

    Raises:
        ValueError: unknown profile, or a run id that is no valid Kubernetes name.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r} is unknown; choose one of {', '.join(sorted(PROFILES))}")
    p = PROFILES[profile]
    validate_run_id(run_id, "--run-id")
    request = TrainJobRequest(run_id=run_id, config=p["config"], output_dir=f"/mnt/runs/{run_id}",
                              overrides=tuple(p["overrides"]))
    settings = {**p["cluster"], **cluster, "image": image}
    return ClusterJobSpec.from_request(request, **settings)
