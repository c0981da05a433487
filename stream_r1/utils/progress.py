"""Progress bars for long work (tqdm on stderr; silent when not a TTY unless forced)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, total: int | None = None, enabled: bool | None = None) -> Iterator[T]:
    """Wrap ``items`` in a tqdm bar; disabled when stderr is not a TTY or STREAM_R1_PROGRESS=0."""
    if enabled is None:
        enabled = sys.stderr.isatty() and os.environ.get("STREAM_R1_PROGRESS", "1") != "0"
    yield from tqdm(items, desc=desc, total=total, disable=not enabled, dynamic_ncols=True, file=sys.stderr)
