"""Where ``stream_r1.ops.steps`` finds the cluster job backends; they live in ``stream_r1.ops.k8s``."""

from stream_r1.ops.k8s.launcher import KubernetesJobBackend, make_backend

__all__ = ["KubernetesJobBackend", "make_backend"]
