"""The embedded default ``Registry``: MLflow's model registry on a local SQLite file.

A real registry (mlflow-skinny + SQLAlchemy + Alembic migrations), no server process. MLflow numbers
versions itself (1, 2, ...); our version label (the pipeline run id) and the lineage live in tags:
``stream_r1.version``, ``stream_r1.run_id``, ``stream_r1.config_hash``, ``stream_r1.data_revision``,
``stream_r1.namespace``, ``metric.<name>``; the model version's ``source`` is the artifact URI.
Registering the same (name, version label, URI) twice returns the existing version (idempotent retries);
the same version label with another URI is refused: versions are immutable, as in the Kubeflow registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stream_r1.ops.registry.base import ModelVersionInfo
from stream_r1.utils.logging import get_logger

log = get_logger(__name__)

_TAG = "stream_r1."
_METRIC = "metric."


def _to_info(mv: Any) -> ModelVersionInfo:
    tags: dict[str, str] = dict(mv.tags or {})
    return ModelVersionInfo(
        name=mv.name,
        version=tags.get(_TAG + "version", str(mv.version)),
        uri=mv.source,
        run_id=tags.get(_TAG + "run_id", ""),
        namespace=tags.get(_TAG + "namespace", ""),
        kfp_run_id=tags.get(_TAG + "kfp_run_id", ""),
        kfp_run_name=tags.get(_TAG + "kfp_run_name", ""),
        config_hash=tags.get(_TAG + "config_hash", ""),
        data_revision=tags.get(_TAG + "data_revision", ""),
        metrics={k[len(_METRIC):]: float(v) for k, v in tags.items() if k.startswith(_METRIC)},
        description=mv.description or "",
    )


class MlflowRegistry:
    """MLflow model registry on ``sqlite:///<db_path>`` (or any MLflow registry URI).

    Args:
        uri: A filesystem path to the SQLite file (created with its parent directory), or an MLflow
            registry URI (``sqlite:///...``, ``postgresql://...``, ``http://mlflow:5000``).
    """

    name = "mlflow"

    def __init__(self, uri: str | Path) -> None:
        from mlflow.tracking import MlflowClient

        uri = str(uri)
        if "://" not in uri:
            path = Path(uri).expanduser().resolve()
            path.parent.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{path}"
        self.uri = uri
        self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    def _find(self, name: str, version: str) -> Any | None:
        from mlflow.exceptions import MlflowException

        try:
            found = self._client.search_model_versions(f"name = '{name}' and tags.`{_TAG}version` = '{version}'")
        except MlflowException:
            return None
        return found[0] if found else None

    def register(self, info: ModelVersionInfo) -> ModelVersionInfo:
        """Create the model (if new) and the version with its lineage tags; idempotent on (name, version, uri).

        Raises:
            ValueError: empty name, version or uri; or the version exists with another URI.
        """
        for field_name in ("name", "version", "uri"):
            if not getattr(info, field_name):
                raise ValueError(f"ModelVersionInfo.{field_name} is empty; a registered version needs a name, "
                                 "a version label (e.g. the run id) and an artifact URI")
        if "'" in info.name or "'" in info.version:
            raise ValueError(f"model name {info.name!r} / version {info.version!r} may not contain quotes")
        from mlflow.exceptions import MlflowException

        existing = self._find(info.name, info.version)
        if existing is not None and existing.source != info.uri:
            raise ValueError(f"{info.name}:{info.version} is already registered with uri={existing.source!r}, not "
                             f"{info.uri!r}; versions are immutable: use a new run_id (version label)")
        if existing is not None:
            log.info("model %s version %s already registered (mlflow v%s); keeping it", info.name, info.version,
                     existing.version)
            return _to_info(existing)
        try:
            self._client.create_registered_model(info.name, description="stream-r1 streaming student")
        except MlflowException as e:
            if "RESOURCE_ALREADY_EXISTS" not in str(e.error_code):
                raise
        tags = {
            _TAG + "version": info.version, _TAG + "run_id": info.run_id, _TAG + "namespace": info.namespace,
            _TAG + "config_hash": info.config_hash, _TAG + "data_revision": info.data_revision,
            _TAG + "kfp_run_id": info.kfp_run_id, _TAG + "kfp_run_name": info.kfp_run_name,
            **{_METRIC + k: repr(float(v)) for k, v in info.metrics.items()},
        }
        mv = self._client.create_model_version(info.name, source=info.uri, tags=tags, description=info.description)
        log.info("registered %s version %s (mlflow v%s) -> %s", info.name, info.version, mv.version, info.uri)
        return _to_info(mv)

    def get(self, name: str, version: str) -> ModelVersionInfo | None:
        """The stored version with label ``version``, or None."""
        mv = self._find(name, version)
        return None if mv is None else _to_info(mv)

    def latest(self, name: str) -> ModelVersionInfo | None:
        """The most recently registered version of ``name`` (highest MLflow version number), or None."""
        from mlflow.exceptions import MlflowException

        try:
            versions = self._client.search_model_versions(f"name = '{name}'")
        except MlflowException:
            return None
        if not versions:
            return None
        return _to_info(max(versions, key=lambda mv: int(mv.version)))
