"""One function call in a spawned process, for build stages that need nothing from each other.

:class:`BackgroundCall` starts ``fn(*args)`` in a fresh ``spawn`` process (never ``fork``: the parent holds
torch's thread pools), :meth:`BackgroundCall.result` waits for its return value and re-raises its failure
as one line, :meth:`BackgroundCall.stop` ends it early. :func:`stops_background_calls` wraps a function so
that however it ends, no call it started keeps running (a stage left running after another failed would go
on writing into the same directory).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

_RUNNING: list[BackgroundCall] = []
"""Calls started and not yet joined."""


class BackgroundCall:
    """``fn(*args)`` in a spawned process (``fn`` and ``args`` must pickle), with ``env`` set there first."""

    def __init__(self, fn: Callable[..., Any], *args: Any, env: dict[str, str] | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._name = getattr(fn, "__name__", repr(fn))
        self._receive, send = ctx.Pipe(duplex=False)
        self._process = ctx.Process(target=_child, args=(send, fn, args, env or {}), daemon=True)
        self._process.start()
        send.close()
        _RUNNING.append(self)

    def result(self) -> Any:
        """Wait for the call and return what it returned.

        Raises:
            RuntimeError: it raised (message: its exception type and text) or its process died.
        """
        try:
            status, value = self._receive.recv()
        except EOFError:
            status, value = "error", f"its process exited with code {self._process.exitcode}"
        self.stop()
        if status != "ok":
            raise RuntimeError(f"{self._name} failed in its own process: {value}")
        return value

    def stop(self) -> None:
        """End the process if it still runs, and reap it."""
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()
        if self in _RUNNING:
            _RUNNING.remove(self)


def _child(send: Connection, fn: Callable[..., Any], args: tuple[Any, ...], env: dict[str, str]) -> None:
    os.environ.update(env)
    try:
        send.send(("ok", fn(*args)))
    except BaseException as e:  # reported to the parent, whose result() raises
        send.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        send.close()


def stops_background_calls(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` that, however it ends, stops every :class:`BackgroundCall` it started and did not collect."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        before = len(_RUNNING)
        try:
            return fn(*args, **kwargs)
        finally:
            for call in _RUNNING[before:]:
                call.stop()

    return wrapper
