"""Admission rules that are NOT in the CRD openAPI schemas, re-implemented to check manifests offline.

PyTorchJob (Training Operator v1.9 validating webhook): DNS-1035 name, only
``Master``/``Worker`` replica types, Master ``replicas`` 1, every container has an image, a container
named ``pytorch``, Worker required with ``elasticPolicy``, ``elasticPolicy.nProcPerNode`` not together
with ``spec.nprocPerNode``. TrainJob (v2.3.0 CEL ``x-kubernetes-validations``, which jsonschema
ignores): DNS-1035 name of at most 63 characters; plus runtimePatches managers unique (list-map key).

Enumerations the CRD types only as ``string`` (``runPolicy.cleanPodPolicy``, replica
``restartPolicy``) are checked against the values the operator's Go types define: any other string
is admitted by the API server and then silently treated as a different policy by the controller.
"""

from __future__ import annotations

from typing import Any

from stream_r1.ops.k8s.spec import DNS1035, MAX_NAME_CHARS


def _name_errors(obj: dict[str, Any]) -> list[str]:
    name = (obj.get("metadata") or {}).get("name", "")
    errors = []
    if not DNS1035.match(name or ""):
        errors.append(f"metadata.name={name!r} must match RFC 1035 DNS label format")
    if len(name or "") > MAX_NAME_CHARS:
        errors.append(f"metadata.name={name!r} must be no more than {MAX_NAME_CHARS} characters")
    return errors


CLEAN_POD_POLICIES = ("None", "Running", "All")
REPLICA_RESTART_POLICIES = ("Always", "OnFailure", "Never", "ExitCode")


def pytorchjob_errors(job: dict[str, Any]) -> list[str]:
    """Webhook violations of a PyTorchJob dict (empty list = admitted).

    Args:
        job: A ``kubeflow.org/v1`` PyTorchJob object.

    Returns:
        One message per violated rule, naming the field.
    """
    errors = _name_errors(job)
    spec = job.get("spec") or {}
    replica_specs = spec.get("pytorchReplicaSpecs") or {}
    if not replica_specs:
        return [*errors, "spec.pytorchReplicaSpecs must not be empty"]
    clean = (spec.get("runPolicy") or {}).get("cleanPodPolicy")
    if clean is not None and clean not in CLEAN_POD_POLICIES:
        errors.append(f"spec.runPolicy.cleanPodPolicy={clean!r} is not one of {', '.join(CLEAN_POD_POLICIES)}")
    for rtype, rspec in replica_specs.items():
        path = f"spec.pytorchReplicaSpecs.{rtype}"
        restart = (rspec or {}).get("restartPolicy")
        if restart is not None and restart not in REPLICA_RESTART_POLICIES:
            errors.append(f"{path}.restartPolicy={restart!r} is not one of {', '.join(REPLICA_RESTART_POLICIES)}")
        if rtype not in ("Master", "Worker"):
            errors.append(f"{path}: replica type {rtype!r} is not one of Master, Worker")
        containers = (((rspec or {}).get("template") or {}).get("spec") or {}).get("containers") or []
        if not containers:
            errors.append(f"{path}.template.spec.containers must not be empty")
        for i, c in enumerate(containers):
            if not c.get("image"):
                errors.append(f"{path}.template.spec.containers[{i}].image must be set")
        if containers and not any(c.get("name") == "pytorch" for c in containers):
            errors.append(f"{path}: no container named 'pytorch' (the operator injects env and ports into it)")
        if rtype == "Master" and (rspec or {}).get("replicas", 1) != 1:
            errors.append(f"{path}.replicas={rspec.get('replicas')!r} must be 1")
    elastic = spec.get("elasticPolicy")
    if elastic is not None:
        if "Worker" not in replica_specs:
            errors.append("spec.elasticPolicy requires a Worker replica spec")
        if elastic.get("nProcPerNode") is not None and spec.get("nprocPerNode") is not None:
            errors.append("spec.elasticPolicy.nProcPerNode and spec.nprocPerNode must not both be set")
    return errors


def trainjob_errors(job: dict[str, Any]) -> list[str]:
    """CEL/list-map violations of a TrainJob dict (empty list = admitted).

    Args:
        job: A ``trainer.kubeflow.org/v1alpha1`` TrainJob object.

    Returns:
        One message per violated rule.
    """
    errors = _name_errors(job)
    managers = [p.get("manager") for p in (job.get("spec") or {}).get("runtimePatches") or []]
    if len(managers) != len(set(managers)):
        errors.append(f"spec.runtimePatches managers {managers} must be unique (list-map key 'manager')")
    return errors


def check(job: dict[str, Any]) -> None:
    """Raise when a job dict would be rejected by admission (before anything is submitted).

    Raises:
        ValueError: listing every violated rule.
    """
    kind = job.get("kind")
    if kind == "PyTorchJob":
        errors = pytorchjob_errors(job)
    elif kind == "TrainJob":
        errors = trainjob_errors(job)
    else:
        raise ValueError(f"kind={kind!r} is not PyTorchJob or TrainJob")
    if errors:
        raise ValueError(f"{kind} {job.get('metadata', {}).get('name')!r} would be rejected: " + "; ".join(errors))
