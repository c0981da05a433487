"""Progress for long work: a tqdm bar on a terminal, periodic plain lines elsewhere (CI logs, pods).

A bar redrawn with carriage returns is unreadable in a log file, and no output at all makes a long step
look hung; so when stderr is not a TTY one line is written every ``STREAM_R1_PROGRESS_SECONDS``
(default 30 s) and one at the end. ``STREAM_R1_PROGRESS=0`` silences both.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

DEFAULT_LINE_SECONDS = 30.0


def _line(desc: str, done: int, total: int | None, elapsed: float) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    if total:
        left = f", about {(total - done) / rate:.0f} s left" if rate > 0 and done < total else ""
        return f"{desc}: {done}/{total} ({100 * done / total:.0f}%), {rate:.2g} it/s{left}"
    return f"{desc}: {done} done, {rate:.2g} it/s"


def progress(items: Iterable[T], desc: str, total: int | None = None, enabled: bool | None = None) -> Iterator[T]:
    """Yield ``items`` while reporting progress on stderr.

    Args:
        items: The work.
        desc: What it is (``"train (micro-steps)"``).
        total: Number of items, when known.
        enabled: True: a tqdm bar; False: silent; None: a bar on a TTY, periodic lines otherwise, nothing
            with ``STREAM_R1_PROGRESS=0``.
    """
    if enabled is None and os.environ.get("STREAM_R1_PROGRESS", "1") == "0":
        enabled = False
    if enabled is None and not sys.stderr.isatty():
        yield from _periodic(items, desc, total)
        return
    yield from tqdm(items, desc=desc, total=total, disable=not enabled, dynamic_ncols=True, file=sys.stderr)


def _periodic(items: Iterable[T], desc: str, total: int | None) -> Iterator[T]:
    env = os.environ.get("STREAM_R1_PROGRESS_SECONDS")
    every = float(env) if env else DEFAULT_LINE_SECONDS
    start = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= every:
            last = now
            print(_line(desc, done, total, now - start), file=sys.stderr, flush=True)
    print(_line(desc, done, total, time.monotonic() - start) + " (finished)", file=sys.stderr, flush=True)
