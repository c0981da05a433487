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


def get_logger(name: str) -> logging.Logger:
    """A module logger under the ``stream_r1`` hierarchy."""
    return logging.getLogger(name)


def configure_logging(level: str | int = "INFO", rank: int | None = None) -> None:
    """Set up the ``stream_r1`` root logger once for a CLI process (stderr, rank-tagged)."""
    root = logging.getLogger("stream_r1")
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
    handler.addFilter(_RankFilter(rank))
    root.addHandler(handler)
    root.propagate = False
