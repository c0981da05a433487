"""The pipeline's first step: settings that cannot work fail here, in seconds, before any GPU is asked for.

Every check is offline except the store's (its keys and bucket are tried, as every later step needs
them). In a pod (``KUBERNETES_SERVICE_HOST`` set) the step also rejects what only works on a laptop:
an SQLite/file registry (it lives in the pod's disk and vanishes with it), the ``local`` job backend
(torchrun inside the CPU launcher pod) and store keys missing from the environment (the secret).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from stream_r1.utils.logging import get_logger

_log = get_logger(__name__)

CLUSTER_BACKENDS = ("pytorchjob", "trainjob")
_REMOTE_URI = re.compile(r"^(https?|grpc)://", re.IGNORECASE)


@dataclass(frozen=True)
class RunSettings:
    """What a run was asked to do: the pipeline parameters the checks read."""

    config: str
    overrides: tuple[str, ...] = ()
    backend: str = "pytorchjob"
    registry: str = "kubeflow"
    registry_uri: str = ""
    eval_prompts: str = ""
    run_id: str = ""
    job_id: str = ""
    num_nodes: int = 1
    gpus_per_node: int = 8
    nproc_per_node: int = 0
    cluster: dict[str, Any] = field(default_factory=dict)
    """``ClusterJobSpec`` fields (image, PVC, node selector, tolerations, Kueue queue, priority)."""

    @property
    def procs_per_node(self) -> int:
        """torchrun processes per node: ``nproc_per_node``, else one per GPU (1 when CPU-only)."""
        return self.nproc_per_node or max(self.gpus_per_node, 1)


def _registry_errors(s: RunSettings, in_pod: bool) -> list[str]:
    from stream_r1.ops.steps import REGISTRIES

    if s.registry not in REGISTRIES:
        return [f"registry={s.registry!r} is not one of {', '.join(REGISTRIES)}"]
    uri = s.registry_uri.strip()
    if s.registry == "kubeflow" and not _REMOTE_URI.match(uri):
        return [f"registry_uri={uri!r} is not a Kubeflow Model Registry address; pass its service URL, e.g. "
                "http://model-registry-service.kubeflow.svc.cluster.local:8080"]
    if s.registry == "mlflow" and in_pod and not _REMOTE_URI.match(uri):
        return [f"registry_uri={uri!r} is a file inside this pod: registrations would vanish with it; use "
                "registry=kubeflow with the Model Registry's URL (or an MLflow tracking server's http:// URL)"]
    return []


def _backend_errors(s: RunSettings, in_pod: bool) -> list[str]:
    from stream_r1.ops.steps import BACKENDS

    if s.backend not in BACKENDS:
        return [f"backend={s.backend!r} is not one of {', '.join(BACKENDS)}"]
    if s.backend == "local" and in_pod:
        return ["backend='local' would run torchrun inside the CPU launcher pod, which has no GPU and no torch; "
                "use backend=pytorchjob (or trainjob)"]
    return []


def _config_errors(s: RunSettings) -> list[str]:
    from stream_r1.config import load_config
    from stream_r1.distributed.batch import plan_batch

    try:
        cfg = load_config(s.config, list(s.overrides))
    except (FileNotFoundError, ValueError, TypeError, KeyError) as e:
        return [f"config={s.config!r}: {e}"]
    nodes = s.num_nodes if s.backend in CLUSTER_BACKENDS else 1
    try:
        plan_batch(cfg.train, nodes * s.procs_per_node)
    except ValueError as e:
        return [f"num_nodes={nodes} x {s.procs_per_node} processes per node: {e}"]
    return []


def _cluster_errors(s: RunSettings) -> list[str]:
    """Build the training job offline: every cluster setting the API would reject fails here."""
    if s.backend not in CLUSTER_BACKENDS:
        return []
    from stream_r1.ops.jobs.base import TrainJobRequest
    from stream_r1.ops.k8s import pytorchjob, trainjob, webhook_rules
    from stream_r1.ops.k8s.spec import ClusterJobSpec

    mount = str(s.cluster.get("pvc_mount_path", "/mnt/runs"))
    request = TrainJobRequest(run_id=s.run_id or "validate", config=s.config, output_dir=f"{mount}/validate",
                              overrides=s.overrides, num_nodes=s.num_nodes, nproc_per_node=s.procs_per_node)
    try:
        spec = ClusterJobSpec.from_request(request, **{"gpus_per_node": s.gpus_per_node, **s.cluster})
        body = pytorchjob.build_pytorchjob(spec) if s.backend == "pytorchjob" else trainjob.build_trainjob(spec)
        webhook_rules.check(body)
    except (TypeError, ValueError) as e:
        return [f"cluster settings: {e}"]
    return []


def _prompt_errors(s: RunSettings) -> list[str]:
    p = s.eval_prompts.strip()
    if p.startswith(("tests/", "./tests/")) or "/tests/" in p:
        return [f"eval_prompts={p!r} points into the repository's tests/, which no image contains; pass a suite "
                "name (tiny, vbench_extended, moviegen_extended) or a path/URI of a fetched prompt file"]
    return []


def _store_errors(bucket: str, environ: Mapping[str, str], in_pod: bool) -> list[str]:
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    missing = [k for k in keys if not environ.get(k)]
    if missing and in_pod:
        return [f"{', '.join(missing)} not set: the step's S3 secret (stream-r1-s3) lacks the keys; create it as "
                "docs/operations.md section 3 shows"]
    if missing:
        return []  # outside a cluster the local runner exports the keys itself
    from stream_r1.ops.steps import open_store

    try:
        open_store(bucket)
    except Exception as e:  # the store's own one-line error (bad keys, bad bucket name, unreachable)
        return [f"artifact store: {e}"]
    return []


def check_run(s: RunSettings, bucket: str, environ: Mapping[str, str]) -> list[str]:
    """Every problem with a run's settings, as one line each (empty: the run can start).

    Args:
        s: The run's settings.
        bucket: The artifact store bucket (its keys come from ``environ``).
        environ: The step's environment (``KUBERNETES_SERVICE_HOST`` marks a pod).
    """
    from stream_r1.ops.steps import resolve_run_id

    in_pod = bool(environ.get("KUBERNETES_SERVICE_HOST"))
    errors: list[str] = []
    try:
        s = replace(s, run_id=resolve_run_id(s.run_id, s.job_id or "validate"))
    except ValueError as e:
        errors.append(str(e))
    errors += _backend_errors(s, in_pod) + _registry_errors(s, in_pod) + _prompt_errors(s)
    errors += _config_errors(s) + _cluster_errors(s)
    if not errors:  # only then touch the network
        errors += _store_errors(bucket, environ, in_pod)
    return errors


def validate_run(s: RunSettings, bucket: str, environ: Mapping[str, str]) -> str:
    """The validation step's body: a summary when the run can start.

    Raises:
        ValueError: listing every problem (the step fails before any GPU is requested).
    """
    errors = check_run(s, bucket, environ)
    if errors:
        raise ValueError("the run cannot work as configured:\n  - " + "\n  - ".join(errors))
    world = (s.num_nodes if s.backend in CLUSTER_BACKENDS else 1) * s.procs_per_node
    summary = f"ok: {s.config} on {s.backend} ({world} processes), registry {s.registry} at {s.registry_uri}"
    _log.info(summary)
    return summary
