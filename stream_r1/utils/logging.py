"""Library logging: ``get_logger(__name__)``; no ``print`` in the library, rank passed in."""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s %(levelname)s %(name)s%(rank)s: %(message)s"


class _RankFilter(logging.Filter):
    def __init__(self, rank: int | None) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = "" if self.rank is None else f"[rank{self.rank}]"
        return True


class _CurrentStderrHandler(logging.StreamHandler):
    """A stream handler on whatever ``sys.stderr`` is when a record is emitted, not when it was made.

    A process that swaps ``sys.stderr`` (a redirect, a test harness's capture) and later closes the old stream
    would otherwise get "I/O operation on closed file" on every later log line.
    """

    @property  # type: ignore[override]
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler.__init__ assigns it
        pass


def get_logger(name: str) -> logging.Logger:
    """A module logger under the ``stream_r1`` hierarchy."""
    return logging.getLogger(name)


def configure_logging(level: str | int = "INFO", rank: int | None = None) -> None:
    """Set up the ``stream_r1`` root logger once for a CLI process (stderr, rank-tagged)."""
    root = logging.getLogger("stream_r1")
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = _CurrentStderrHandler()
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
    handler.addFilter(_RankFilter(rank))
    root.addHandler(handler)
    root.propagate = False
