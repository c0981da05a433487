"""``Registry`` backend for the Kubeflow Model Registry (``model-registry`` client 0.3.18).

A registered student = RegisteredModel ``name`` → ModelVersion ``version`` (provenance in its custom
properties) → ModelArtifact (the immutable S3 URI, with ``model_source_*`` = the KFP pipeline run).
Versions are unique on the server; registering an existing (name, version) with the same URI is a
retry and returns the stored version, a different URI is refused (versions are immutable).
"""

from __future__ import annotations

from typing import Any

from stream_r1.ops.registry.base import ModelVersionInfo
from stream_r1.utils.logging import get_logger

_log = get_logger(__name__)

METRIC_PREFIX = "metrics."
MODEL_FORMAT_NAME = "diffusers"  # the exported student is a diffusers WanTransformer3DModel directory
MODEL_FORMAT_VERSION = "0.42.1"
_PROVENANCE = ("run_id", "namespace", "kfp_run_id", "kfp_run_name", "config_hash", "data_revision")


class KubeflowModelRegistry:
    """Kubeflow Model Registry behind the project's ``Registry`` protocol."""

    def __init__(
        self,
        server_address: str = "http://model-registry-service.kubeflow.svc.cluster.local",
        port: int | None = 8080,
        *,
        author: str = "stream-r1-pipeline",
        is_secure: bool | None = None,
        user_token: str | None = None,
        client: Any = None,
    ) -> None:
        """Connect (the client lists one registered model to check the server answers).

        Args:
            server_address: ``http(s)://`` address of the Model Registry REST service.
            port: Its port (8080 in-cluster; 443 through the gateway).
            author: Recorded as author/owner of new models and versions.
            is_secure: TLS; inferred from the scheme when None.
            user_token: Bearer token; None = the client's default (service-account token file).
            client: An existing ``model_registry.ModelRegistry`` (tests, custom async runners).
        """
        if client is None:
            from model_registry import ModelRegistry

            client = ModelRegistry(server_address, port, author=author, is_secure=is_secure, user_token=user_token)
        self._mr = client

    @classmethod
    def from_uri(cls, uri: str, **kwargs: Any) -> KubeflowModelRegistry:
        """Connect to ``http(s)://host[:port]`` (the pipeline's ``registry_uri`` parameter).

        Raises:
            ValueError: when ``uri`` is not an http(s) URL.
        """
        from urllib.parse import urlparse

        parsed = urlparse(uri)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"registry uri={uri!r} is not an http(s) URL; use e.g. "
                             "http://model-registry-service.kubeflow.svc.cluster.local:8080")
        port = parsed.port or (8080 if parsed.scheme == "http" else 443)
        return cls(f"{parsed.scheme}://{parsed.hostname}", port, is_secure=parsed.scheme == "https", **kwargs)

    def register(self, info: ModelVersionInfo) -> ModelVersionInfo:
        """Register ``info``; a retry of the same (name, version, uri) returns the stored version.

        Raises:
            ValueError: empty name/version/uri, or the version exists with another URI.
            RuntimeError: the version exists without its artifact (an interrupted registration).
        """
        from model_registry.exceptions import StoreError

        for field_name in ("name", "version", "uri"):
            if not getattr(info, field_name):
                raise ValueError(f"ModelVersionInfo.{field_name} is empty; the registry needs name, version and uri")
        stored = self.get(info.name, info.version)
        if stored is None:
            try:
                self._mr.register_model(
                    info.name,
                    info.uri,
                    version=info.version,
                    model_format_name=MODEL_FORMAT_NAME,
                    model_format_version=MODEL_FORMAT_VERSION,
                    model_source_kind="kfp",
                    model_source_class="pipelinerun",
                    model_source_id=info.kfp_run_id or info.run_id or None,
                    model_source_name=info.kfp_run_name or info.run_id or None,
                    model_source_group=info.namespace or None,
                    version_description=info.description or None,
                    metadata=_custom_properties(info),
                )
                _log.info("registered %s:%s -> %s", info.name, info.version, info.uri)
            except StoreError as e:
                if "already exists" not in str(e):
                    raise
                _log.info("%s:%s already exists (a concurrent retry registered it)", info.name, info.version)
            stored = self.get(info.name, info.version)
            if stored is None:
                raise RuntimeError(f"{info.name}:{info.version} was registered but cannot be read back")
        return _same_or_raise(stored, info)

    def get(self, name: str, version: str) -> ModelVersionInfo | None:
        """The stored version (with its artifact URI), or None when the model or version is absent."""
        from model_registry.exceptions import StoreError

        try:
            mv = self._mr.get_model_version(name, version)
        except StoreError:  # the registered model itself does not exist
            return None
        if mv is None:
            return None
        artifact = self._mr.get_model_artifact(name, version)
        return _to_info(name, mv, artifact)

    def latest(self, name: str) -> ModelVersionInfo | None:
        """The most recently created version of ``name``, or None."""
        from model_registry.exceptions import StoreError

        try:
            pager = self._mr.get_model_versions(name).order_by_creation_time().descending().page_size(1)
        except StoreError:
            return None
        mv = next(pager, None)
        if mv is None:
            return None
        return _to_info(name, mv, self._mr.get_model_artifact(name, mv.name))


def _custom_properties(info: ModelVersionInfo) -> dict[str, str | float]:
    """Provenance and metrics as the version's custom properties (flat, typed scalars)."""
    props: dict[str, str | float] = {k: getattr(info, k) for k in _PROVENANCE if getattr(info, k)}
    props.update({f"{METRIC_PREFIX}{k}": float(v) for k, v in info.metrics.items()})
    return props


def _to_info(name: str, mv: Any, artifact: Any) -> ModelVersionInfo:
    props = dict(mv.custom_properties or {})
    return ModelVersionInfo(
        name=name,
        version=mv.name,
        uri=(artifact.uri or "") if artifact is not None else "",
        run_id=str(props.get("run_id", "")),
        namespace=str(props.get("namespace", "")),
        kfp_run_id=str(props.get("kfp_run_id", "")),
        kfp_run_name=str(props.get("kfp_run_name", "")),
        config_hash=str(props.get("config_hash", "")),
        data_revision=str(props.get("data_revision", "")),
        metrics={k[len(METRIC_PREFIX):]: float(v) for k, v in props.items() if k.startswith(METRIC_PREFIX)},
        description=mv.description or "",
    )


def _same_or_raise(stored: ModelVersionInfo, wanted: ModelVersionInfo) -> ModelVersionInfo:
    if not stored.uri:
        raise RuntimeError(
            f"{stored.name}:{stored.version} exists without a model artifact (an interrupted registration); "
            "archive that version in the Model Registry UI or register under a new version label"
        )
    if stored.uri != wanted.uri:
        raise ValueError(
            f"{wanted.name}:{wanted.version} is already registered with uri={stored.uri!r}, not {wanted.uri!r}; "
            "versions are immutable: use a new version label"
        )
    return stored
