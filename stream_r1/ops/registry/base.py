"""The ``Registry`` interface: register an exported student with its lineage, idempotently."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, kw_only=True)
class ModelVersionInfo:
    """One registered model version and its provenance."""

    name: str
    """Registered model name (e.g. ``stream-r1-student``)."""
    version: str
    """Version label, unique per model (e.g. ``<run_id>``)."""
    uri: str
    """Immutable artifact URI of the exported student (``s3://bucket/runs/<run-id>/export/``)."""
    run_id: str = ""
    """Pipeline run id that produced it."""
    namespace: str = ""
    """Kubernetes namespace of the run (cluster registries)."""
    kfp_run_id: str = ""
    """KFP run id (``dsl.PIPELINE_JOB_ID_PLACEHOLDER``): the run in the KFP UI that produced the version."""
    kfp_run_name: str = ""
    """KFP run name (``dsl.PIPELINE_JOB_NAME_PLACEHOLDER``)."""
    config_hash: str = ""
    """Hash of the resolved training config."""
    data_revision: str = ""
    """Git/DVC revision of the inputs (prompts, params)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Evaluation metrics recorded with the version."""
    description: str = ""
    """Free text."""


class Registry(Protocol):
    """A model registry. ``register`` of an existing (name, version) returns it unchanged."""

    def register(self, info: ModelVersionInfo) -> ModelVersionInfo:
        """Create the version (and the model if new); idempotent on retry."""
        ...

    def get(self, name: str, version: str) -> ModelVersionInfo | None:
        """The stored version, or None."""
        ...

    def latest(self, name: str) -> ModelVersionInfo | None:
        """The most recently registered version of ``name``, or None (for the promotion gate)."""
        ...
