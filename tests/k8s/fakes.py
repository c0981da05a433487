"""FAKES for the Kubernetes tests (no API server can run on this machine).

``FakeClock`` is an injected clock whose ``sleep`` only advances time. ``RecordedApiFake`` replays
recorded API responses from ``recorded/*.json`` through the launcher's ``KubeApi`` protocol: each
poll (``get_job``) takes the next recorded frame (the last one repeats), pods, events and logs come
from the same frame, and every mutating call is recorded so tests can assert what was created or
deleted. Scripted failures: ``create`` answers, ``error`` frames (API outage), ``stream_cuts`` (a log
stream that breaks after N lines), a ``workflow`` (the run's Argo Workflow, or 404) and the
``launcher_pod`` the launcher reads its owner from.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stream_r1.ops.k8s.api import ApiError
from stream_r1.ops.k8s.logs import timestamp_key

RECORDED = Path(__file__).parent / "recorded"


class FakeClock:
    """Monotonic fake time; ``sleep`` advances it and records the request."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self.on_sleep: list = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0, "the launcher must never sleep 0 (busy loop)"
        self.sleeps.append(seconds)
        self.now += seconds
        for hook in self.on_sleep:
            hook()


def _error(frame: dict[str, Any]) -> ApiError:
    return ApiError(frame["status"], frame.get("reason", ""), frame.get("body", ""))


class RecordedApiFake:
    """A ``KubeApi`` replaying one recorded scenario."""

    def __init__(self, scenario: str | dict[str, Any], clock: FakeClock | None = None,
                 list_error: dict[str, Any] | None = None) -> None:
        self.rec = json.loads((RECORDED / f"{scenario}.json").read_text()) if isinstance(scenario, str) else scenario
        self.clock = clock
        self.list_error = list_error
        self.created: list[dict[str, Any]] = []
        self.create_calls = 0
        self.deleted: list[tuple[str, str, str]] = []
        self.gets = 0
        self.watch_calls = 0
        self.log_streams: list[tuple[str, str | None]] = []
        self.event_queries: list[str] = []
        self._frame: dict[str, Any] = {}

    def _next_frame(self) -> dict[str, Any]:
        polls = self.rec["polls"]
        self._frame = polls[min(self.gets, len(polls) - 1)]
        self.gets += 1
        return self._frame

    def create_job(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        assert kind == body["kind"] and namespace == body["metadata"]["namespace"]
        creates = self.rec.get("create", [{"status": 201}])
        frame = creates[min(self.create_calls, len(creates) - 1)]
        self.create_calls += 1
        if frame["status"] >= 300:
            if frame["status"] >= 500:  # the recorded 5xx happened after the object was stored
                self.created.append(body)
            raise _error(frame)
        self.created.append(body)
        return body

    def get_job(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        frame = self._next_frame()
        if "error" in frame:
            raise _error(frame["error"])
        if frame.get("job") is None:
            raise ApiError(404, "Not Found")
        assert frame["job"]["kind"] == kind and frame["job"]["metadata"]["name"] == name
        return frame["job"]

    def list_jobs(self, kind: str, namespace: str, limit: int) -> list[dict[str, Any]]:
        if self.list_error:
            raise _error(self.list_error)
        return []

    def delete_job(self, kind: str, namespace: str, name: str) -> None:
        self.deleted.append((kind, namespace, name))

    def watch_job(self, kind: str, namespace: str, name: str, timeout_seconds: int) -> Iterator[dict[str, Any]]:
        sessions = self.rec.get("watch", [])
        session = sessions[self.watch_calls] if self.watch_calls < len(sessions) else {"events": []}
        self.watch_calls += 1
        for event in session.get("events", []):
            if self.clock is not None:
                self.clock.now += 1.0  # an event arrives a second into the watch
            yield event
        if "error" in session:
            raise _error(session["error"])

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        key, _, value = label_selector.partition("=")
        pods = self._frame.get("pods", [])
        return [p for p in pods if p["metadata"]["labels"].get(key) == value]

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        pod = self.rec.get("launcher_pod")
        if pod is None or pod["metadata"]["name"] != name:
            raise ApiError(404, "Not Found", f"pods {name!r} not found")
        return pod

    def list_events(self, namespace: str, field_selector: str) -> list[dict[str, Any]]:
        self.event_queries.append(field_selector)
        _, _, pod = field_selector.partition("involvedObject.name=")
        return [e for e in self._frame.get("events", []) if e["involvedObject"]["name"] == pod]

    def get_workflow(self, namespace: str, name: str) -> dict[str, Any]:
        wf = self.rec.get("workflow")
        if isinstance(wf, dict) and "error" in wf:
            raise _error(wf["error"])
        if wf is None or wf["metadata"]["name"] != name:
            raise ApiError(404, "Not Found", f"workflows {name!r} not found")
        return wf

    def _pod_log(self, pod: str, container: str) -> str:
        pods = self._frame.get("pods", [])
        match = [p for p in pods if p["metadata"]["name"] == pod]
        if not match or container not in {c["name"] for c in match[0]["spec"]["containers"]}:
            raise ApiError(400, "Bad Request", f"container {container} is not valid for pod {pod}")
        logs = self._frame.get("logs") or ({pods[0]["metadata"]["name"]: self._frame.get("log", "")} if pods else {})
        return logs.get(pod, "")

    def stream_pod_log(self, namespace: str, pod: str, container: str, since_time: str | None) -> Iterator[str]:
        self.log_streams.append((pod, since_time))
        text = self._pod_log(pod, container)
        session = sum(1 for p, _ in self.log_streams if p == pod) - 1
        cuts = self.rec.get("stream_cuts", {}).get(pod, [])
        cut = cuts[session] if session < len(cuts) else None
        for i, raw in enumerate(text.splitlines()):
            if since_time and timestamp_key(raw.split(" ", 1)[0]) < timestamp_key(since_time):
                continue  # what the API does with sinceTime (whole seconds)
            if cut is not None and i >= cut:
                raise ApiError(0, "ProtocolError", "Connection broken: IncompleteRead")
            yield raw


# ----------------------------------------------------------------------------------------------
# FAKE Kubeflow Model Registry REST server (the Go server cannot run here).
# Implements, statefully, exactly the /api/model_registry/v1 endpoints model-registry 0.3.18's
# ModelRegistry.register_model / get_model_version / get_model_artifact / get_model_versions call.
# ----------------------------------------------------------------------------------------------

import itertools  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from urllib.parse import parse_qs, urlparse  # noqa: E402

PREFIX = "/api/model_registry/v1"


class FakeModelRegistryServer:
    """A stateful in-memory fake of the Model Registry REST API on 127.0.0.1 (a FAKE, not the server)."""

    def __init__(self) -> None:
        self.models: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, dict[str, Any]] = {}
        self.artifacts: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                fake._dispatch(self, "GET")

            def do_POST(self) -> None:
                fake._dispatch(self, "POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FakeModelRegistryServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- helpers --------------------------------------------------------------------------------

    def _new(self, body: dict[str, Any]) -> dict[str, Any]:
        now = str(int(time.time() * 1000))
        return {**body, "id": str(next(self._ids)), "createTimeSinceEpoch": now, "lastUpdateTimeSinceEpoch": now}

    @staticmethod
    def _page(items: list[dict[str, Any]], q: dict[str, str]) -> dict[str, Any]:
        if q.get("orderBy") == "CREATE_TIME":
            items = sorted(items, key=lambda o: (int(o["createTimeSinceEpoch"]), int(o["id"])))
        else:
            items = sorted(items, key=lambda o: int(o["id"]))
        if q.get("sortOrder") == "DESC":
            items.reverse()
        size = int(q.get("pageSize") or 100)
        start = int(q.get("nextPageToken") or 0)
        page = items[start:start + size]
        token = str(start + size) if start + size < len(items) else ""
        return {"items": page, "size": len(page), "pageSize": size, "nextPageToken": token}

    def _dispatch(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(h.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = json.loads(h.rfile.read(int(h.headers.get("Content-Length") or 0)) or b"{}") if method == "POST" else {}
        path = url.path[len(PREFIX):] if url.path.startswith(PREFIX) else None
        with self._lock:
            self.requests.append((method, url.path))
            status, payload = self._route(method, path, q, body)
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _route(self, method: str, path: str | None, q: dict[str, str], body: dict[str, Any]) -> tuple[int, Any]:
        def missing(what: str) -> tuple[int, Any]:
            return 404, {"code": "404", "message": f"{what} not found"}

        parts = (path or "").strip("/").split("/")
        if method == "GET" and parts == ["registered_models"]:
            return 200, self._page(list(self.models.values()), q)
        if method == "GET" and parts == ["registered_model"]:
            found = [m for m in self.models.values() if m["name"] == q.get("name")]
            return (200, found[0]) if found else missing(f"registered model {q.get('name')!r}")
        if method == "POST" and parts == ["registered_models"]:
            if any(m["name"] == body["name"] for m in self.models.values()):
                return 409, {"code": "409", "message": "registered model already exists"}
            obj = self._new({"state": "LIVE", **body})
            self.models[obj["id"]] = obj
            return 201, obj
        if method == "GET" and parts == ["model_version"]:
            found = [v for v in self.versions.values()
                     if v["name"] == q.get("name") and v["registeredModelId"] == q.get("parentResourceId")]
            return (200, found[0]) if found else missing(f"model version {q.get('name')!r}")
        if method == "POST" and parts == ["model_versions"]:
            if any(v["name"] == body["name"] and v["registeredModelId"] == body["registeredModelId"]
                   for v in self.versions.values()):
                return 409, {"code": "409", "message": "model version already exists"}
            obj = self._new({"state": "LIVE", **body})
            self.versions[obj["id"]] = obj
            return 201, obj
        if method == "GET" and len(parts) == 3 and parts[0] == "registered_models" and parts[2] == "versions":
            return 200, self._page([v for v in self.versions.values() if v["registeredModelId"] == parts[1]], q)
        if method == "POST" and len(parts) == 3 and parts[0] == "model_versions" and parts[2] == "artifacts":
            if parts[1] not in self.versions:
                return missing(f"model version id {parts[1]}")
            obj = self._new({"state": "LIVE", **body, "modelVersionId": parts[1]})
            obj.pop("modelVersionId")
            self.artifacts[obj["id"]] = {**obj, "_version": parts[1]}
            return 201, obj
        if method == "GET" and parts == ["model_artifact"]:
            found = [a for a in self.artifacts.values()
                     if a["name"] == q.get("name") and a["_version"] == q.get("parentResourceId")]
            return (200, {k: v for k, v in found[0].items() if k != "_version"}) if found else missing("artifact")
        return 404, {"code": "404", "message": f"the fake does not implement {method} {path}"}


# ----------------------------------------------------------------------------------------------
# FAKE Kubernetes API server: just the REST paths KubernetesClientApi calls, so the adapter over the
# real `kubernetes` client (URL building, errors, JSON, watch streaming) is exercised over HTTP.
# ----------------------------------------------------------------------------------------------


class FakeKubeApiServer:
    """In-memory custom objects + recorded pods/logs on 127.0.0.1 (a FAKE, not an API server)."""

    def __init__(self, pods: list[dict[str, Any]] | None = None, log: str = "",
                 installed: tuple[str, ...] = ("pytorchjobs", "trainjobs", "workflows"),
                 events: list[dict[str, Any]] | None = None, cut_log_at: int | None = None) -> None:
        """``cut_log_at``: the log response promises the whole log but the connection closes after that
        many bytes (a broken follow stream)."""
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.pods = pods or []
        self.log = log
        self.events = events or []
        self.cut_log_at = cut_log_at
        self.installed = installed
        self.requests: list[tuple[str, str]] = []
        self.watch_events: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def do_DELETE(self) -> None:
                fake._handle(self, "DELETE")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def __enter__(self) -> FakeKubeApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @staticmethod
    def _status(code: int, reason: str, message: str) -> dict[str, Any]:
        return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason,
                "code": code}

    def _send(self, h: BaseHTTPRequestHandler, code: int, payload: Any, content_type: str = "application/json") -> None:
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        h.send_response(code)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(h.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.requests.append((method, h.path))
        parts = url.path.strip("/").split("/")
        # /apis/<group>/<version>/namespaces/<ns>/<plural>[/<name>]
        if parts[0] == "apis" and len(parts) >= 6:
            ns, plural = parts[4], parts[5]
            if plural not in self.installed:
                return self._send(h, 404, self._status(404, "NotFound", "the server could not find the requested resource"))
            if method == "POST":
                body = json.loads(h.rfile.read(int(h.headers["Content-Length"])))
                key = (ns, plural, body["metadata"]["name"])
                if key in self.objects:
                    return self._send(h, 409, self._status(409, "AlreadyExists", f"{plural} {key[2]!r} already exists"))
                self.objects[key] = {**body, "metadata": {**body["metadata"], "uid": "u-1", "resourceVersion": "1"}}
                return self._send(h, 201, self.objects[key])
            if len(parts) == 7:
                key = (ns, plural, parts[6])
                if key not in self.objects:
                    return self._send(h, 404, self._status(404, "NotFound", f"{plural} {parts[6]!r} not found"))
                if method == "DELETE":
                    self.objects.pop(key)
                    return self._send(h, 200, self._status(200, "", "deleted") | {"status": "Success"})
                return self._send(h, 200, self.objects[key])
            if q.get("watch") in ("true", "True", "1"):
                lines = "".join(json.dumps(e) + "\n" for e in self.watch_events)
                return self._send(h, 200, lines)
            items = [o for (n, p, _), o in self.objects.items() if n == ns and p == plural]
            return self._send(h, 200, {"apiVersion": "v1", "kind": "List", "items": items[: int(q.get("limit", 500))],
                                       "metadata": {"resourceVersion": "1"}})
        # /api/v1/namespaces/<ns>/pods[/<name>[/log]] and /api/v1/namespaces/<ns>/events
        if parts[:2] == ["api", "v1"] and parts[4] == "events":
            _, _, name = q.get("fieldSelector", "").partition("involvedObject.name=")
            items = [e for e in self.events if e["involvedObject"]["name"] == name]
            return self._send(h, 200, {"apiVersion": "v1", "kind": "EventList", "metadata": {}, "items": items})
        if parts[:2] == ["api", "v1"] and parts[4] == "pods":
            if len(parts) == 7 and parts[6] == "log":
                since = q.get("sinceTime", "")
                text = "".join(ln for ln in self.log.splitlines(keepends=True) if not since or ln[:19] >= since[:19])
                if self.cut_log_at is None:
                    return self._send(h, 200, text, "text/plain")
                # A follow stream is chunked, one chunk per line; the connection drops inside a chunk.
                h.protocol_version = "HTTP/1.1"
                h.send_response(200)
                h.send_header("Content-Type", "text/plain")
                h.send_header("Transfer-Encoding", "chunked")
                h.end_headers()
                sent = 0
                for line in text.encode().splitlines(keepends=True):
                    part = line[: max(0, self.cut_log_at - sent)]
                    h.wfile.write(f"{len(line):x}\r\n".encode() + part)
                    sent += len(part)
                    if len(part) < len(line):
                        break
                    h.wfile.write(b"\r\n")
                h.wfile.flush()
                h.close_connection = True
                return None
            if len(parts) == 6:
                match = [p for p in self.pods if p["metadata"]["name"] == parts[5]]
                if not match:
                    return self._send(h, 404, self._status(404, "NotFound", f"pods {parts[5]!r} not found"))
                return self._send(h, 200, match[0])
            return self._send(h, 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": self.pods})
        return self._send(h, 404, self._status(404, "NotFound", f"fake has no {method} {url.path}"))
