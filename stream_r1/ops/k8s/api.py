"""The slice of the Kubernetes API the launcher uses, as a protocol plus the real implementation.

Tests plug in a recorded-response replayer (``tests/k8s/fakes.py``); production wraps
``kubernetes.client.CustomObjectsApi`` and ``CoreV1Api``. Objects cross this boundary as plain
camelCase dicts, exactly as the API server serialises them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

JobKind = Literal["PyTorchJob", "TrainJob"]


@dataclass(frozen=True)
class KindInfo:
    """Group/version/plural of a job kind, for the custom-objects endpoints."""

    group: str
    version: str
    plural: str


KINDS: dict[str, KindInfo] = {
    "PyTorchJob": KindInfo("kubeflow.org", "v1", "pytorchjobs"),
    "TrainJob": KindInfo("trainer.kubeflow.org", "v1alpha1", "trainjobs"),
}


class ApiError(Exception):
    """An API call failed: HTTP ``status`` (0 = connection broken) and the server's reason."""

    def __init__(self, status: int, reason: str = "", body: str = "") -> None:
        super().__init__(f"HTTP {status} {reason}".strip() + (f": {body[:300]}" if body else ""))
        self.status = status
        self.reason = reason
        self.body = body


class KubeApi(Protocol):
    """What the launcher calls; every method raises :class:`ApiError` on failure."""

    def create_job(self, kind: JobKind, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST the job; 409 when a job of that name exists."""
        ...

    def get_job(self, kind: JobKind, namespace: str, name: str) -> dict[str, Any]:
        """GET the job (404 when absent)."""
        ...

    def list_jobs(self, kind: JobKind, namespace: str, limit: int) -> list[dict[str, Any]]:
        """LIST jobs of the kind (404 when the CRD is not installed)."""
        ...

    def delete_job(self, kind: JobKind, namespace: str, name: str) -> None:
        """DELETE the job with foreground propagation (its pods go with it)."""
        ...

    def watch_job(self, kind: JobKind, namespace: str, name: str, timeout_seconds: int) -> Iterator[dict[str, Any]]:
        """Watch events ``{"type": ..., "object": job}`` of one job until the server timeout."""
        ...

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """LIST pods matching a selector."""
        ...

    def read_pod_log(self, namespace: str, pod: str, container: str, tail_lines: int) -> str:
        """The container's log with RFC 3339 timestamps (``timestamps=true``)."""
        ...


class KubernetesClientApi:
    """:class:`KubeApi` over the official ``kubernetes`` client (in-cluster or kubeconfig)."""

    def __init__(self, custom: Any, core: Any, request_timeout_seconds: float = 60.0) -> None:
        """Wrap ``CustomObjectsApi`` and ``CoreV1Api`` instances sharing one ``ApiClient``.

        ``request_timeout_seconds`` bounds each call; the overall wait is the launcher's policy.
        """
        self._custom = custom
        self._core = core
        self._timeout = request_timeout_seconds

    @classmethod
    def from_environment(cls, request_timeout_seconds: float = 60.0) -> KubernetesClientApi:
        """In-cluster service-account config when running in a pod, else the local kubeconfig."""
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        api_client = client.ApiClient()
        return cls(client.CustomObjectsApi(api_client), client.CoreV1Api(api_client), request_timeout_seconds)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, _request_timeout=self._timeout, **kwargs)
        except ApiException as e:
            raise ApiError(int(e.status or 0), str(e.reason or ""), str(e.body or "")) from e
        except HTTPError as e:  # connection reset, read timeout, protocol error: transient
            raise ApiError(0, type(e).__name__, str(e)) from e

    def create_job(self, kind: JobKind, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        k = KINDS[kind]
        return self._call(self._custom.create_namespaced_custom_object, k.group, k.version, namespace, k.plural, body)

    def get_job(self, kind: JobKind, namespace: str, name: str) -> dict[str, Any]:
        k = KINDS[kind]
        return self._call(self._custom.get_namespaced_custom_object, k.group, k.version, namespace, k.plural, name)

    def list_jobs(self, kind: JobKind, namespace: str, limit: int) -> list[dict[str, Any]]:
        k = KINDS[kind]
        out = self._call(self._custom.list_namespaced_custom_object, k.group, k.version, namespace, k.plural,
                         limit=limit)
        return list(out.get("items") or [])

    def delete_job(self, kind: JobKind, namespace: str, name: str) -> None:
        k = KINDS[kind]
        self._call(self._custom.delete_namespaced_custom_object, k.group, k.version, namespace, k.plural, name,
                   propagation_policy="Foreground")

    def watch_job(self, kind: JobKind, namespace: str, name: str, timeout_seconds: int) -> Iterator[dict[str, Any]]:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        k = KINDS[kind]
        w = watch.Watch()
        try:
            yield from w.stream(self._custom.list_namespaced_custom_object, k.group, k.version, namespace, k.plural,
                                field_selector=f"metadata.name={name}", timeout_seconds=timeout_seconds)
        except ApiException as e:
            raise ApiError(int(e.status or 0), str(e.reason or ""), str(e.body or "")) from e
        except HTTPError as e:
            raise ApiError(0, type(e).__name__, str(e)) from e
        finally:
            w.stop()

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        pods = self._call(self._core.list_namespaced_pod, namespace, label_selector=label_selector)
        # The typed V1Pod objects -> the API's camelCase JSON, the shape the waiter reads.
        return list(self._core.api_client.sanitize_for_serialization(pods).get("items") or [])

    def read_pod_log(self, namespace: str, pod: str, container: str, tail_lines: int) -> str:
        return self._call(self._core.read_namespaced_pod_log, pod, namespace, container=container,
                          timestamps=True, tail_lines=tail_lines)
