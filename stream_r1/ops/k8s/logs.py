"""Follow the master pod's log by polling: each line reaches the step log exactly once.

The API is asked for the tail with ``timestamps=true``; lines at or before the newest timestamp already
emitted are skipped, so overlapping tails and container restarts (a new log, later timestamps) are
both handled without a long-lived follow stream that would die with the connection.
"""

from __future__ import annotations

from collections.abc import Callable

from stream_r1.ops.k8s.api import ApiError, KubeApi
from stream_r1.utils.logging import get_logger

_log = get_logger(__name__)


def timestamp_key(ts: str) -> str:
    """Sortable form of an RFC 3339 UTC timestamp whose fraction may be trimmed (``...:05.1Z``)."""
    ts = ts.rstrip("Z")
    whole, _, frac = ts.partition(".")
    return f"{whole}.{frac.ljust(9, '0')[:9]}"


class LogFollower:
    """Emits new log lines of one container per pod across polls."""

    def __init__(self, sink: Callable[[str], None], tail_lines: int = 1000) -> None:
        """Args:
        sink: Receives ``"[pod] line"`` strings (the KFP step log).
        tail_lines: Lines fetched per poll; lines beyond it between two polls are dropped.
        """
        self._sink = sink
        self._tail = tail_lines
        self._last: dict[str, str] = {}

    def poll(self, api: KubeApi, namespace: str, pod: str, container: str) -> int:
        """Fetch and emit the new lines of ``pod``/``container``; API errors are logged, not raised.

        Returns:
            Number of lines emitted.
        """
        try:
            text = api.read_pod_log(namespace, pod, container, self._tail)
        except ApiError as e:  # pod not started yet, or being replaced: try again next poll
            _log.debug("log of %s not readable yet: %s", pod, e)
            return 0
        last = self._last.get(pod, "")
        emitted = 0
        for raw in text.splitlines():
            ts, _, line = raw.partition(" ")
            key = timestamp_key(ts) if ts[:1].isdigit() else last
            if key <= last:
                continue
            self._sink(f"[{pod}] {line}")
            last = key
            emitted += 1
        self._last[pod] = last
        return emitted
