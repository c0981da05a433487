"""Offline validation of manifests: CRD openAPI schemas, admission rules, core kinds (no API server can run in CI, so what it would reject is checked here).

No API server can run on the build machine, so this is what "valid" means before a cluster sees a
manifest: the CRD's ``openAPIV3Schema`` (``jsonschema`` Draft 7; ``x-kubernetes-*`` keys ignored),
the webhook/CEL rules in :mod:`webhook_rules`, and ``kubernetes-validate`` in strict mode for core
kinds and pod templates (strict catches misspelled keys).

An API server prunes (or, with ``fieldValidation=Strict``, rejects) fields a structural CRD schema
does not declare, and JSON Schema alone accepts them: a typo such as ``runPolicy.backoffLimits``
would be silently dropped and the default backoff used. :func:`unknown_field_errors` therefore walks
the object beside the schema and reports every undeclared key, at every level.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from stream_r1.ops.k8s import pod, webhook_rules

KUBERNETES_VERSION = "1.33"
CRD_FILES = {
    "PyTorchJob": "kubeflow.org_pytorchjobs.v1.9.4.yaml",
    "TrainJob": "trainer.kubeflow.org_trainjobs.v2.3.0.yaml",
    "ClusterTrainingRuntime": "trainer.kubeflow.org_clustertrainingruntimes.v2.3.0.yaml",
}


@cache
def _crd_schema(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        crd = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # 0.6 MB CRDs: C loader
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


# ObjectMeta fields a client may send (the root ``metadata`` of a CRD schema is only ``type: object``;
# the API server validates it as ObjectMeta).
OBJECT_META_FIELDS = frozenset({
    "name", "generateName", "namespace", "labels", "annotations", "ownerReferences", "finalizers",
    "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
    "deletionGracePeriodSeconds", "managedFields", "selfLink",
})


def unknown_field_errors(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Keys of ``obj`` that ``schema`` (a structural openAPI v3 schema) does not declare, recursively.

    Open maps (``additionalProperties``) and ``x-kubernetes-preserve-unknown-fields`` subtrees accept any
    key; the root ``metadata`` is checked against ObjectMeta's fields.

    Returns:
        ``"<json path>: unknown field 'KEY'"`` per undeclared key.
    """
    errors: list[str] = []
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            errors += unknown_field_errors(item, schema["items"], f"{path}[{i}]")
        return errors
    if not isinstance(obj, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return errors
    if path == "metadata":  # the root ObjectMeta: the schema says only "type: object"
        return [f"metadata: unknown field {k!r}" for k in obj if k not in OBJECT_META_FIELDS]
    props = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    for key, value in obj.items():
        here = f"{path}.{key}" if path else key
        if key in props:
            errors += unknown_field_errors(value, props[key], here)
        elif isinstance(extra, dict):
            errors += unknown_field_errors(value, extra, here)
        elif extra is not True:  # a structural schema prunes every undeclared key
            errors.append(f"{path or '<root>'}: unknown field {key!r}")
    return errors


def crd_errors(obj: dict[str, Any], schema_dir: str | Path) -> list[str]:
    """Schema violations of a custom resource against its vendored CRD, unknown fields included.

    Args:
        obj: A PyTorchJob, TrainJob or ClusterTrainingRuntime dict.
        schema_dir: Folder holding the CRD YAMLs (``tests/k8s/schemas`` in this repository).

    Returns:
        ``"<json path>: <message>"`` per violation.

    Raises:
        ValueError: for a kind without a vendored CRD.
        FileNotFoundError: when the CRD file is missing.
    """
    from jsonschema import Draft7Validator

    kind = obj.get("kind", "")
    if kind not in CRD_FILES:
        raise ValueError(f"kind={kind!r} has no vendored CRD; known: {sorted(CRD_FILES)}")
    path = Path(schema_dir) / CRD_FILES[kind]
    if not path.is_file():
        raise FileNotFoundError(f"CRD schema {path} not found; point schema_dir at the k8s-schemas folder")
    schema = _crd_schema(str(path))
    validator = Draft7Validator(schema)
    errors = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(obj)]
    return errors + unknown_field_errors(obj, schema)


def core_errors(obj: dict[str, Any]) -> list[str]:
    """``kubernetes-validate`` (strict) violations of a built-in kind (Pod, Role, PVC, ...)."""
    import kubernetes_validate
    from kubernetes_validate.utils import ValidationError

    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except ValidationError as e:
        return [f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}: {e.message}"]
    return []


def pod_templates(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pod template of a job: per replica type (PyTorchJob), or per patched replicated job
    (TrainJob: the runtime patch with the trainer's image, command, env and resources merged into
    container ``node``, i.e. the pod the Trainer would create apart from the runtime's own fields)."""
    if job.get("kind") == "PyTorchJob":
        return [r["template"] for r in job["spec"]["pytorchReplicaSpecs"].values()]
    trainer = job["spec"].get("trainer") or {}
    templates = []
    for patch in job["spec"].get("runtimePatches") or []:
        for rj in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
            template = copy.deepcopy(rj["template"]["spec"]["template"])
            for c in template["spec"].get("containers", []):
                if c["name"] == "node":
                    c.update({k: trainer[k] for k in ("image", "command", "args", "env") if k in trainer})
                    if "resourcesPerNode" in trainer:
                        c["resources"] = trainer["resourcesPerNode"]
            templates.append(template)
    return templates


def job_errors(job: dict[str, Any], schema_dir: str | Path) -> list[str]:
    """All offline checks of a job: CRD schema, admission rules and (v1) pod templates in strict mode."""
    errors = crd_errors(job, schema_dir)
    kind = job.get("kind")
    errors += webhook_rules.pytorchjob_errors(job) if kind == "PyTorchJob" else webhook_rules.trainjob_errors(job)
    for template in pod_templates(job):
        errors += core_errors(pod.as_pod(template))
    return errors
