"""Stop everything a long-running command started when it is told to stop (SIGTERM, SIGINT, SIGHUP).

``run-local`` starts a SeaweedFS server (its own session), kfp.local task subprocesses, and under them
``torchrun`` and its workers (their own session too). A CI timeout sends SIGTERM to the top process
only; by default Python dies at once and every one of those keeps running, re-parented to PID 1.
:func:`stop_tree_on_signals` turns the signal into cleanup: every descendant is sent SIGTERM (SIGKILL
after a grace period) and :class:`RunInterrupted` is raised in the main thread, so ``with`` blocks
unwind (the S3 server is stopped, temp dirs removed) and the caller can still print its summary.
Descendants are found through ``/proc`` (Linux); sessions and process groups do not hide them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from stream_r1.utils.logging import get_logger

log = get_logger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class RunInterrupted(BaseException):
    """The command received a stop signal; its process tree has been stopped.

    A ``BaseException`` (like ``KeyboardInterrupt``) so library code's ``except Exception`` — kfp.local's
    task runner treats those as a failed task and carries on — cannot swallow it.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        """The shell convention for death by a signal: 128 + its number."""
        return 128 + self.signum


def _parents() -> dict[int, int]:
    """``{pid: parent pid}`` of every process visible in ``/proc``."""
    out: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses; split after the last ')'.
        fields = stat[stat.rfind(")") + 2:].split()
        out[int(entry.name)] = int(fields[1])
    return out


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children first, then theirs), not ``pid`` itself."""
    parents = _parents()
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    out: list[int] = []
    frontier = [pid]
    while frontier:
        nxt = [c for p in frontier for c in children.get(p, [])]
        out.extend(nxt)
        frontier = nxt
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited; only its parent's wait() is missing
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def terminate_descendants(pid: int | None = None, grace_seconds: float = 10.0) -> list[int]:
    """SIGTERM every descendant of ``pid`` (default: this process), SIGKILL the ones alive after the grace.

    Returns:
        The pids that were signalled.
    """
    pid = os.getpid() if pid is None else pid
    victims = descendants(pid)
    for p in victims:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and any(_alive(p) for p in victims):
        time.sleep(0.1)
    for p in victims + descendants(pid):  # and any started during the grace period
        if _alive(p):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)
    return victims


@contextlib.contextmanager
def stop_tree_on_signals(grace_seconds: float = 10.0) -> Iterator[None]:
    """Within the block, a stop signal terminates this process's descendants and raises :class:`RunInterrupted`.

    Only the main thread can install signal handlers; elsewhere the block runs unchanged. A second
    signal while the tree is being stopped is ignored (CI systems often send SIGTERM twice).
    """
    if not _in_main_thread():
        yield
        return
    stopping = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        log.warning("received %s: stopping every process this run started", signal.Signals(signum).name)
        terminate_descendants(grace_seconds=grace_seconds)
        # Library threads (kfp.local runs tasks from a thread pool) may still start a process after this
        # sweep; from now on any new descendant is killed at once, for as long as this process lives.
        threading.Thread(target=_reap_forever, name="stop-reaper", daemon=True).start()
        raise RunInterrupted(signum)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def kill_until_quiet(quiet_seconds: float = 1.0, timeout_seconds: float = 30.0) -> None:
    """SIGKILL every descendant until none has appeared for ``quiet_seconds`` (at most ``timeout_seconds``).

    Called after a stop signal, before exiting: a thread that was launching a process as the signal came
    cannot leave that process behind.
    """
    me, start = os.getpid(), time.monotonic()
    last_seen = start
    while time.monotonic() - last_seen < quiet_seconds and time.monotonic() - start < timeout_seconds:
        found = [p for p in descendants(me) if _alive(p)]
        for p in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)
        if found:
            last_seen = time.monotonic()
        time.sleep(0.05)


def _reap_forever(period_seconds: float = 0.1) -> None:
    me = os.getpid()
    while True:
        for p in descendants(me):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)
        time.sleep(period_seconds)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
