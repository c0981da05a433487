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

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        """GET one pod (the launcher reads its own, for the run's owner)."""
        ...

    def list_events(self, namespace: str, field_selector: str) -> list[dict[str, Any]]:
        """LIST core/v1 events, e.g. ``involvedObject.name=<pod>``."""
        ...

    def get_workflow(self, namespace: str, name: str) -> dict[str, Any]:
        """GET the Argo ``Workflow`` that runs a KFP run (404 when the run was deleted)."""
        ...

    def stream_pod_log(self, namespace: str, pod: str, container: str, since_time: str | None) -> Iterator[str]:
        """Follow the container's log (``follow=true&timestamps=true``), from ``since_time`` (RFC 3339) on.

        Yields complete lines ``"<RFC 3339 timestamp> <text>"`` until the container exits or the
        connection ends; a line cut by a broken connection is not yielded (the reconnect re-reads it).
        """
        ...


class KubernetesClientApi:
    """:class:`KubeApi` over the official ``kubernetes`` client (in-cluster or kubeconfig)."""

    def __init__(self, custom: Any, core: Any, request_timeout_seconds: float = 60.0,
                 follow_idle_seconds: float = 600.0) -> None:
        """Wrap ``CustomObjectsApi`` and ``CoreV1Api`` instances sharing one ``ApiClient``.

        ``request_timeout_seconds`` bounds each call; the overall wait is the launcher's policy. A log
        stream silent for ``follow_idle_seconds`` is closed (and reopened by the follower).
        """
        self._custom = custom
        self._core = core
        self._timeout = request_timeout_seconds
        self._follow_idle = follow_idle_seconds

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

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        pod = self._call(self._core.read_namespaced_pod, name, namespace)
        return dict(self._core.api_client.sanitize_for_serialization(pod))

    def list_events(self, namespace: str, field_selector: str) -> list[dict[str, Any]]:
        events = self._call(self._core.list_namespaced_event, namespace, field_selector=field_selector)
        return list(self._core.api_client.sanitize_for_serialization(events).get("items") or [])

    def get_workflow(self, namespace: str, name: str) -> dict[str, Any]:
        return self._call(self._custom.get_namespaced_custom_object, "argoproj.io", "v1alpha1", namespace,
                          "workflows", name)

    def stream_pod_log(self, namespace: str, pod: str, container: str, since_time: str | None) -> Iterator[str]:
        # The generated client has no sinceTime parameter (only sinceSeconds, which depends on clock skew
        # between this pod and the API server), so the log endpoint is called directly.
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        query = [("container", container), ("follow", "true"), ("timestamps", "true")]
        if since_time:
            query.append(("sinceTime", since_time))
        try:
            resp = self._core.api_client.call_api(
                "/api/v1/namespaces/{namespace}/pods/{name}/log", "GET",
                path_params={"namespace": namespace, "name": pod}, query_params=query,
                header_params={"Accept": "*/*"}, auth_settings=["BearerToken"], _preload_content=False,
                _request_timeout=(self._timeout, self._follow_idle), _return_http_data_only=True)
            yield from complete_lines(resp.stream(65536))
        except ApiException as e:
            raise ApiError(int(e.status or 0), str(e.reason or ""), str(e.body or "")) from e
        except HTTPError as e:  # connection reset / idle read timeout: the caller reconnects
            raise ApiError(0, type(e).__name__, str(e)) from e


def complete_lines(chunks: Iterator[bytes]) -> Iterator[str]:
    """Decode a byte stream into lines; a trailing fragment is yielded only if the stream ended cleanly.

    A connection that breaks mid-line raises out of ``chunks`` before the fragment is yielded, so the
    reconnect (``sinceTime``) reads the whole line instead of emitting half of it.
    """
    buf = b""
    for chunk in chunks:
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", errors="replace")
    if buf:
        yield buf.decode("utf-8", errors="replace")
