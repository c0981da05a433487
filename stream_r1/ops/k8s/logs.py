"""Follow the logs of every replica of a job: each line reaches the step log exactly once.

Each pod's container log is read in follow mode (``follow=true&timestamps=true``) on a background
thread, one stream session at a time. A session ends when the container exits, the server closes the
stream or the connection breaks; the next poll of the launcher opens a new one from ``sinceTime`` =
the newest timestamp already emitted. The API truncates ``sinceTime`` to whole seconds, so a
reconnect re-reads the lines of that second: :class:`LogCursor` skips exactly the lines already
emitted (older timestamps, and as many lines at the newest timestamp as were emitted), so nothing is
repeated and nothing is dropped. A container restart (same pod) is a new log with later timestamps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from stream_r1.ops.k8s.api import ApiError, KubeApi
from stream_r1.utils.logging import get_logger

_log = get_logger(__name__)


def timestamp_key(ts: str) -> str:
    """Sortable form of an RFC 3339 UTC timestamp whose fraction may be trimmed (``...:05.1Z``)."""
    ts = ts.rstrip("Z")
    whole, _, frac = ts.partition(".")
    return f"{whole}.{frac.ljust(9, '0')[:9]}"


@dataclass
class LogCursor:
    """Where one container's log has been read up to: the newest timestamp and how many lines carried it."""

    key: str = ""
    timestamp: str = ""
    count_at_key: int = 0

    def since_time(self) -> str | None:
        """``sinceTime`` for the next session (whole seconds: the API drops the fraction)."""
        return self.timestamp.split(".")[0].rstrip("Z") + "Z" if self.timestamp else None

    def session(self) -> _Session:
        """A filter for one stream session that starts at this cursor."""
        return _Session(self, self.key, self.count_at_key)


class _Session:
    def __init__(self, cursor: LogCursor, resume_key: str, resume_count: int) -> None:
        self._cursor = cursor
        self._resume_key = resume_key
        self._to_skip = resume_count

    def accept(self, raw: str) -> str | None:
        """The line's text when it is new, else None (and the cursor advanced past it)."""
        ts, _, text = raw.partition(" ")
        if not ts[:1].isdigit():  # no timestamp: a continuation the API should not send; keep it
            return raw
        key = timestamp_key(ts)
        if key < self._resume_key:
            return None
        if key == self._resume_key and self._to_skip > 0:
            self._to_skip -= 1
            return None
        c = self._cursor
        if key == c.key:
            c.count_at_key += 1
        else:
            c.key, c.timestamp, c.count_at_key = key, ts, 1
        return text


class LogStreams:
    """Follows ``[pod] line`` of every replica's container into ``sink`` across stream sessions."""

    def __init__(self, api: KubeApi, namespace: str, container: str, sink: Callable[[str], None], *,
                 threaded: bool = True) -> None:
        """Args:
        api: The Kubernetes API.
        namespace: Namespace of the pods.
        container: Container to follow in every pod (``pytorch`` for v1, ``node`` for v2).
        sink: Receives ``"[pod] line"`` strings (the KFP step log); called under a lock.
        threaded: One background thread per session (a follow stream blocks while the container
            runs); False runs each session inline, for an API whose streams end at once (tests).
        """
        self._api = api
        self._ns = namespace
        self._container = container
        self._sink = sink
        self._lock = threading.Lock()
        self._cursors: dict[str, LogCursor] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._threaded = threaded
        self.sessions = 0

    def follow(self, pods: list[str]) -> None:
        """Start a stream session for each pod that has none running (call on every poll)."""
        for pod in pods:
            if not self._threaded:
                self._session(pod)
                continue
            t = self._threads.get(pod)
            if t is not None and t.is_alive():
                continue
            t = threading.Thread(target=self._session, args=(pod,), name=f"log-{pod}", daemon=True)
            self._threads[pod] = t
            t.start()

    def finish(self, timeout_seconds: float = 30.0) -> None:
        """At the end of the job: let running sessions end, then read every pod's remaining lines once more."""
        deadline = time.monotonic() + timeout_seconds
        for t in list(self._threads.values()):
            t.join(max(0.0, deadline - time.monotonic()))
        for pod in list(self._cursors):
            t = self._threads.get(pod)
            if t is None or not t.is_alive():
                self._session(pod)

    def _session(self, pod: str) -> None:
        with self._lock:
            cursor = self._cursors.setdefault(pod, LogCursor())
            since = cursor.since_time()
            self.sessions += 1
        session = cursor.session()
        try:
            for raw in self._api.stream_pod_log(self._ns, pod, self._container, since):
                with self._lock:
                    text = session.accept(raw)
                    if text is not None:
                        self._sink(f"[{pod}] {text}")
        except ApiError as e:  # not started yet, being replaced, or the connection broke: the next poll reconnects
            _log.debug("log stream of %s ended: %s", pod, e)
