"""Which KFP run a launcher pod serves, who owns its job, and whether that run is being cancelled.

A KFP v2 run on Kubernetes is an Argo ``Workflow``; every step pod is owned by it. The launcher
gives the training job the same owner, so deleting the run (which deletes the Workflow) lets the
Kubernetes garbage collector delete the job and its pods. SIGTERM alone does not say why the
launcher pod is stopping: a node drain or eviction (the job must keep running; the retried step
re-attaches) looks the same as a cancelled run (the job must go). The Workflow tells them apart: KFP
terminates a run by setting ``spec.activeDeadlineSeconds: 0``, Argo's stop/terminate set
``spec.shutdown``, and a deleted run has no Workflow (or one being deleted).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stream_r1.ops.k8s.api import ApiError, KubeApi
from stream_r1.utils.logging import get_logger

_log = get_logger(__name__)

ENV_KFP_RUN_ID = "STREAM_R1_KFP_RUN_ID"
ENV_POD_NAME = "STREAM_R1_POD_NAME"
ENV_POD_NAMESPACE = "STREAM_R1_POD_NAMESPACE"
WORKFLOW_KIND = "Workflow"
WORKFLOW_API = "argoproj.io/v1alpha1"


@dataclass(frozen=True)
class RunContext:
    """The launcher pod and the KFP run it belongs to (empty fields: unknown, e.g. outside KFP)."""

    kfp_run_id: str = ""
    """KFP run id (``dsl.PIPELINE_JOB_ID_PLACEHOLDER``), labels the job ``stream-r1/kfp-run-id``."""
    pod_name: str = ""
    """This pod's name (downward API ``metadata.name``): its owner is the run's Workflow."""
    pod_namespace: str = ""
    """This pod's namespace (downward API ``metadata.namespace``)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str], kfp_run_id: str = "") -> RunContext:
        """From ``STREAM_R1_POD_NAME``, ``STREAM_R1_POD_NAMESPACE`` (downward API) and ``kfp_run_id``
        (else ``STREAM_R1_KFP_RUN_ID``)."""
        return cls(kfp_run_id or environ.get(ENV_KFP_RUN_ID, ""), environ.get(ENV_POD_NAME, ""),
                   environ.get(ENV_POD_NAMESPACE, ""))


@dataclass(frozen=True)
class Owner:
    """The run's Workflow as an owner of the job (None fields when no Workflow owns the launcher pod)."""

    references: tuple[dict[str, Any], ...] = ()
    workflow: str = ""


def find_owner(api: KubeApi, ctx: RunContext, job_namespace: str) -> Owner:
    """The Workflow owning the launcher pod, as ``ownerReferences`` for a job in ``job_namespace``.

    Owners must live in the dependent's namespace, so a job in another namespace gets none (its
    ``stream-r1/kfp-run-id`` label still finds it). Never raises: without an owner the job is only
    bounded by its own ``activeDeadlineSeconds`` and TTL.
    """
    if not ctx.pod_name or (ctx.pod_namespace or job_namespace) != job_namespace:
        return Owner()
    try:
        pod = api.get_pod(job_namespace, ctx.pod_name)
    except ApiError as e:
        _log.warning("cannot read launcher pod %s (%s): the job gets no owner reference", ctx.pod_name, e)
        return Owner()
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == WORKFLOW_KIND and str(ref.get("apiVersion", "")).startswith("argoproj.io/"):
            # Not a controller reference (the operator controls the job) and no blockOwnerDeletion (that
            # needs update rights on Workflows' finalizers, which the launcher does not have).
            owner = {"apiVersion": ref["apiVersion"], "kind": WORKFLOW_KIND, "name": ref["name"], "uid": ref["uid"]}
            return Owner((owner,), ref["name"])
    return Owner()


def run_cancelled(api: KubeApi, namespace: str, workflow: str) -> tuple[bool | None, str]:
    """Is the run of ``workflow`` being cancelled or deleted?

    Returns:
        ``(True, why)``, ``(False, why)``, or ``(None, why)`` when it cannot be told (no Workflow known,
        or the API failed): the caller must then keep the job, since an outage is no cancellation.
    """
    if not workflow:
        return None, "no Argo Workflow owns this pod"
    try:
        wf = api.get_workflow(namespace, workflow)
    except ApiError as e:
        if e.status == 404:
            return True, f"workflow {workflow} was deleted (the run was deleted)"
        return None, f"cannot read workflow {workflow}: {e}"
    spec = wf.get("spec") or {}
    if (wf.get("metadata") or {}).get("deletionTimestamp"):
        return True, f"workflow {workflow} is being deleted"
    if spec.get("shutdown"):
        return True, f"workflow {workflow} has spec.shutdown={spec['shutdown']}"
    if spec.get("activeDeadlineSeconds") == 0:
        return True, f"workflow {workflow} was terminated (activeDeadlineSeconds 0)"
    return False, f"workflow {workflow} is still running"
