"""One typed description of a distributed training job on the GPU pool (PyTorchJob and TrainJob).

Both builders (``pytorchjob.py``, ``trainjob.py``) read only this object, so the kubectl-deployable
manifest in ``manifests/`` and what the KFP launcher submits cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from stream_r1.distributed.launch import DEFAULT_MAX_RESTARTS, torchrun_command
from stream_r1.ops.jobs.base import TrainJobRequest

RestartPolicy = Literal["OnFailure", "Never", "ExitCode", "Always"]

# RFC 1035 label: what the PyTorchJob webhook and the TrainJob CEL rule require of metadata.name.
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME_CHARS = 63
# Pods are named <job>-master-0 / <job>-worker-12 (v1) or <job>-node-0-0-xxxxx (v2, JobSet), and pod
# host names must stay within 63 characters; keep the job name short enough for the longest suffix.
MAX_JOB_NAME_CHARS = 48

GPU_RESOURCE = "nvidia.com/gpu"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# Label values: at most 63 characters of [A-Za-z0-9._-], alphanumeric at both ends.
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

NCCL_ENV: dict[str, str] = {
    # Warnings and init summaries only: INFO floods the step log on 8+ ranks.
    "NCCL_DEBUG": "WARN",
    # A failed or timed-out collective aborts the process instead of hanging every rank until the
    # job deadline; the pod then fails and restarts from the newest PVC checkpoint (--resume auto).
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    # The watchdog kills a rank whose collectives stopped making progress for this long.
    "TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC": "600",
    # The collective timeout itself is the process group's (init_process_group(timeout=...)).
}
"""Environment of every training container: fail fast on NCCL errors instead of hanging."""


def job_name_for(prefix: str, run_id: str) -> str:
    """The DNS-1035 job name of a run: ``<prefix>-<sanitised run id>``, at most 48 characters.

    Args:
        prefix: Name prefix (itself DNS-1035, e.g. ``stream-r1``).
        run_id: Any run id (KFP run ids are UUIDs; upper case and ``_`` are folded).

    Returns:
        A deterministic name, so a retried launcher re-attaches to the same job.

    Raises:
        ValueError: when the prefix is not DNS-1035 or the run id has no usable character.
    """
    if not DNS1035.match(prefix):
        raise ValueError(f"job name prefix {prefix!r} is not a DNS-1035 label; use lower-case letters, digits, '-'")
    slug = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")
    slug = re.sub(r"-{2,}", "-", slug)
    if not slug:
        raise ValueError(f"run_id={run_id!r} has no letter or digit; pass a KFP run id or another readable id")
    name = f"{prefix}-{slug}"[:MAX_JOB_NAME_CHARS].rstrip("-")
    assert DNS1035.match(name), name
    return name


@dataclass(frozen=True, kw_only=True)
class ClusterJobSpec:
    """Everything the cluster job of one training run needs.

    Defaults describe the project's 8-GPU pool: one node = 8 GPUs = 8 torchrun processes.
    """

    request: TrainJobRequest
    """The run: config, output directory (on the PVC), overrides, ``--resume``."""
    image: str
    """Training image, pinned by tag or digest (``components/_shared/images.py``)."""
    namespace: str = "stream-r1"
    """Namespace of the job (the KFP profile namespace)."""
    name_prefix: str = "stream-r1"
    """Job name = ``<name_prefix>-<run id>`` (DNS-1035, ≤ 48 chars)."""
    num_nodes: int = 1
    """Nodes: Master + (num_nodes - 1) Workers."""
    gpus_per_node: int = 8
    """``nvidia.com/gpu`` limit per pod; 0 = CPU-only (dev overlay)."""
    nproc_per_node: int = 8
    """torchrun processes per node (one per GPU)."""
    cpu_per_node: str = "64"
    """CPU request/limit per pod."""
    memory_per_node: str = "800Gi"
    """Memory request/limit per pod."""
    node_selector: dict[str, str] = field(default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    """Node labels of the GPU pool."""
    tolerations: tuple[dict[str, Any], ...] = (
        {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
    )
    """Tolerations for the GPU pool's taints (core/v1 Toleration dicts)."""
    shm_size: str = "64Gi"
    """Size of the memory-backed ``/dev/shm`` (NCCL and dataloader workers need far more than 64 MiB)."""
    pvc_name: str = "stream-r1-runs"
    """PVC holding checkpoints and TensorBoard logs (survives pod restarts: ``--resume auto``)."""
    pvc_mount_path: str = "/mnt/runs"
    """Where the PVC is mounted; ``request.output_dir`` must lie under it."""
    s3_secret_name: str = ""
    """Secret with ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` (→ env), for a
    training config that reads S3 itself. Empty (default): the job reads and writes only the PVC (the
    launcher stages inputs and publishes outputs), so the GPU pods carry no store credentials."""
    nccl_env: dict[str, str] = field(default_factory=lambda: dict(NCCL_ENV))
    """NCCL / torch.distributed environment of the training containers (:data:`NCCL_ENV`)."""
    queue_name: str = ""
    """Kueue LocalQueue (label ``kueue.x-k8s.io/queue-name``): Kueue admits the whole job at once
    (all nodes or none) against the queue's quota. Empty: no Kueue."""
    priority_class: str = ""
    """``priorityClassName`` of the training pods (PyTorchJob only: TrainJob v2.3 runtime patches cannot
    set it, the ClusterTrainingRuntime must). Empty: the cluster's default priority."""
    kfp_run_id: str = ""
    """The KFP run that launched the job (label ``stream-r1/kfp-run-id``: find or garbage-collect the
    jobs of a run with one selector)."""
    owner_references: tuple[dict[str, Any], ...] = ()
    """``metadata.ownerReferences`` of the job (the launcher sets the run's Argo Workflow, so deleting
    the KFP run deletes its job)."""
    restart_policy: RestartPolicy = "OnFailure"
    """Per-replica restart policy (v1); the PVC checkpoint makes restarts resume, not restart."""
    backoff_limit: int = 3
    """Pod restarts before the job is marked Failed."""
    active_deadline_seconds: int = 172800
    """Hard wall-clock limit of the job (the operator kills it after this)."""
    ttl_seconds_after_finished: int = 86400
    """The operator garbage-collects the finished job after this."""
    service_account: str = "stream-r1-train"
    """Service account of the training pods (no API permissions needed)."""
    image_pull_secrets: tuple[str, ...] = ()
    """Pull secrets for a private registry."""
    master_port: int = 23456
    """Rendezvous port (the operator's ``pytorchjob-port``)."""
    runtime_name: str = "torch-distributed"
    """Trainer v2 ClusterTrainingRuntime to reference."""

    def __post_init__(self) -> None:
        job_name_for(self.name_prefix, self.request.run_id)  # raises early on a bad prefix / run id
        if not self.image or self.image.endswith(":latest") or (":" not in self.image.rsplit("/", 1)[-1]
                                                                and "@" not in self.image):
            raise ValueError(f"image={self.image!r} must be pinned by a tag (not 'latest') or a digest, "
                             "e.g. ghcr.io/stream-r1/stream-r1-train:0.1.0")
        if not DNS1035.match(self.namespace):
            raise ValueError(f"namespace={self.namespace!r} is not a DNS-1035 label")
        if self.num_nodes < 1:
            raise ValueError(f"num_nodes={self.num_nodes} must be >= 1")
        if self.nproc_per_node < 1:
            raise ValueError(f"nproc_per_node={self.nproc_per_node} must be >= 1")
        if self.gpus_per_node < 0:
            raise ValueError(f"gpus_per_node={self.gpus_per_node} must be >= 0 (0 = CPU-only)")
        if self.gpus_per_node and self.nproc_per_node > self.gpus_per_node:
            raise ValueError(f"nproc_per_node={self.nproc_per_node} exceeds gpus_per_node={self.gpus_per_node}; "
                             "run one process per GPU")
        mount = self.pvc_mount_path.rstrip("/")
        out = self.request.output_dir.rstrip("/")
        if not (out == mount or out.startswith(mount + "/")):
            raise ValueError(f"request.output_dir={self.request.output_dir!r} is not under the PVC mount "
                             f"{self.pvc_mount_path!r}; checkpoints outside the PVC are lost when a pod restarts "
                             f"(use e.g. {mount}/<run-id>)")
        if self.request.resume != "auto":
            # Restart recovery relies on `--resume auto` picking the newest verified PVC checkpoint.
            raise ValueError(f"request.resume={self.request.resume!r}: cluster jobs must use 'auto' so a "
                             "restarted pod resumes from the PVC checkpoint")
        for name, value in (("queue_name", self.queue_name), ("kfp_run_id", self.kfp_run_id)):
            if len(value) > MAX_NAME_CHARS or not LABEL_VALUE.match(value):
                raise ValueError(f"{name}={value!r} is not a valid Kubernetes label value (at most 63 characters "
                                 "of letters, digits, '-', '_', '.')")
        if self.priority_class and not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", self.priority_class):
            raise ValueError(f"priority_class={self.priority_class!r} is not a PriorityClass name (DNS-1123)")
        if self.backoff_limit < 0 or self.active_deadline_seconds < 1:
            raise ValueError(f"backoff_limit={self.backoff_limit} must be >= 0 and active_deadline_seconds="
                             f"{self.active_deadline_seconds} >= 1")

    @classmethod
    def from_request(cls, request: TrainJobRequest, **cluster: Any) -> ClusterJobSpec:
        """Build a spec from a KFP ``train`` request plus cluster settings.

        ``num_nodes`` comes from the request. ``nproc_per_node`` comes from the request when it asks
        for more than one process, else one process per GPU (``gpus_per_node``, 1 when CPU-only).
        """
        gpus = int(cluster.get("gpus_per_node", 8))
        nproc = request.nproc_per_node if request.nproc_per_node > 1 else max(gpus, 1)
        cluster.setdefault("nproc_per_node", nproc)
        cluster.setdefault("num_nodes", request.num_nodes)
        return cls(request=request, **cluster)

    @property
    def job_name(self) -> str:
        """DNS-1035 name of the cluster job (deterministic in the run id)."""
        return job_name_for(self.name_prefix, self.request.run_id)

    @property
    def labels(self) -> dict[str, str]:
        """Labels on the job and its pods (find the run's objects with one selector)."""
        labels = {
            "app.kubernetes.io/name": "stream-r1",
            "app.kubernetes.io/component": "train",
            "stream-r1/run-id": self.job_name,
        }
        if self.kfp_run_id:
            labels["stream-r1/kfp-run-id"] = self.kfp_run_id
        return labels

    def job_metadata(self) -> dict[str, Any]:
        """``metadata`` of the job object: name, namespace, labels (+ Kueue queue), owner references."""
        labels = dict(self.labels)
        if self.queue_name:
            labels[KUEUE_QUEUE_LABEL] = self.queue_name
        meta: dict[str, Any] = {"name": self.job_name, "namespace": self.namespace, "labels": labels}
        if self.owner_references:
            meta["ownerReferences"] = [dict(o) for o in self.owner_references]
        return meta

    def command(self) -> list[str]:
        """``torchrun --nnodes N:N --rdzv-backend c10d ... -m stream_r1 train ...`` (elastic restarts).

        The operator / torch plugin inject ``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and
        ``PET_MASTER_PORT``; the c10d store runs on the master at that address (Kubernetes expands
        ``$(VAR)`` from the container env). A failed rank makes every node's agent restart its
        workers, which resume with ``--resume auto`` (:mod:`stream_r1.distributed.launch`).
        """
        return torchrun_command(num_nodes=self.num_nodes, nproc_per_node=self.nproc_per_node, job_id=self.job_name,
                                max_restarts=DEFAULT_MAX_RESTARTS,
                                rdzv_endpoint="$(PET_MASTER_ADDR):$(PET_MASTER_PORT)", args=self.request.train_args())

    def env(self) -> list[dict[str, Any]]:
        """Container env: unbuffered logs, NCCL settings, request env, S3 credentials only when a secret is named."""
        env: list[dict[str, Any]] = [{"name": "PYTHONUNBUFFERED", "value": "1"}]
        merged = {**self.nccl_env, **self.request.env}
        env += [{"name": k, "value": v} for k, v in sorted(merged.items())]
        if not self.s3_secret_name:
            return env
        for key, optional in (("AWS_ACCESS_KEY_ID", False), ("AWS_SECRET_ACCESS_KEY", False),
                              ("AWS_ENDPOINT_URL", True)):
            ref: dict[str, Any] = {"name": self.s3_secret_name, "key": key}
            if optional:
                ref["optional"] = True
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
        # Non-AWS S3 endpoints (SeaweedFS) reject boto's default CRC trailers (botocore >= 1.36 sends them by default).
        env += [{"name": "AWS_REQUEST_CHECKSUM_CALCULATION", "value": "when_required"},
                {"name": "AWS_RESPONSE_CHECKSUM_VALIDATION", "value": "when_required"}]
        return env

    def resources(self) -> dict[str, dict[str, str]]:
        """Requests = limits (guaranteed QoS), with the GPU limit when ``gpus_per_node > 0``."""
        res = {"cpu": self.cpu_per_node, "memory": self.memory_per_node}
        if self.gpus_per_node:
            res[GPU_RESOURCE] = str(self.gpus_per_node)
        return {"requests": dict(res), "limits": dict(res)}
