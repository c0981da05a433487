"""FAKES for the Kubernetes tests (no API server can run on this machine).

``FakeClock`` is an injected clock whose ``sleep`` only advances time. ``RecordedApiFake`` replays
recorded API responses from ``recorded/*.json`` through the launcher's ``KubeApi`` protocol: each
poll (``get_job``) takes the next recorded frame (the last one repeats), pods and logs come from the
same frame, and every mutating call is recorded so tests can assert what was created or deleted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stream_r1.ops.k8s.api import ApiError

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

    def read_pod_log(self, namespace: str, pod: str, container: str, tail_lines: int) -> str:
        names = {c["name"] for p in self._frame.get("pods", []) for c in p["spec"]["containers"]}
        if container not in names:
            raise ApiError(400, "Bad Request", f"container {container} is not valid for pod {pod}")
        return self._frame.get("log", "")
