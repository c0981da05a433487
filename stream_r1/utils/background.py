"""One function call in a spawned process, for work that needs nothing from what the caller does meanwhile.

:class:`BackgroundCall` starts ``fn(*args)`` in a fresh ``spawn`` process (never ``fork``: the parent holds
torch's thread pools), :meth:`BackgroundCall.result` waits for its return value and re-raises its failure
as one line, :meth:`BackgroundCall.stop` ends it early. Used as a context manager it never outlives the
``with`` block, however that ends (a stage left running after another failed would go on writing into the
same directory).
"""

from __future__ import annotations

import multiprocessing
import os
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

from stream_r1.utils.logging import get_logger

log = get_logger(__name__)

_REAP_SECONDS = 30.0
"""How long :meth:`BackgroundCall.result` lets a child that has answered exit on its own before ending it."""


class BackgroundCall:
    """``fn(*args)`` in a spawned process (``fn`` and ``args`` must pickle), with ``env`` set there first."""

    def __init__(self, fn: Callable[..., Any], *args: Any, env: dict[str, str] | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._name = getattr(fn, "__name__", repr(fn))
        self._receive, send = ctx.Pipe(duplex=False)
        self._process = ctx.Process(target=_child, args=(send, fn, args, env or {}), daemon=True)
        self._process.start()
        send.close()

    def __enter__(self) -> BackgroundCall:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def result(self) -> Any:
        """Wait for the call and return what it returned.

        Raises:
            RuntimeError: it raised (message: its exception type and text; the child's traceback is logged at
                DEBUG) or its process died.
        """
        try:
            status, value = self._receive.recv()
        except EOFError:  # the pipe closed without an answer: the child died; reap it for its exit code
            self._process.join()
            status, value = "error", (f"its process exited with code {self._process.exitcode}", "")
        self._process.join(_REAP_SECONDS)  # it has answered and is returning
        self.stop()
        if status != "ok":
            message, child_traceback = value
            log.debug("%s failed in its own process:\n%s", self._name, child_traceback)
            raise RuntimeError(f"{self._name} failed in its own process: {message}")
        return value

    def stop(self) -> None:
        """End the process if it still runs, and reap it."""
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()


def _child(send: Connection, fn: Callable[..., Any], args: tuple[Any, ...], env: dict[str, str]) -> None:
    os.environ.update(env)
    try:
        send.send(("ok", fn(*args)))
    except BaseException as e:  # reported to the parent, whose result() raises
        send.send(("error", (f"{type(e).__name__}: {e}", traceback.format_exc())))
    finally:
        send.close()
