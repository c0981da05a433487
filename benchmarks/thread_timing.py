"""Thread CPU time of repeated calls, shared by the side-by-side CPU benchmarks run as scripts from ``benchmarks/``.

Thread CPU time, not wall time: on a shared 2-core machine another job's load changes wall time far more than the
CPU time one torch thread spends on the work, and both compared paths are timed in alternation in one process.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def thread_ms(fn: Callable[[], object], calls: int) -> float:
    """Mean thread CPU milliseconds of one call of ``fn`` over ``calls`` calls."""
    t0 = time.thread_time()
    for _ in range(calls):
        fn()
    return 1000.0 * (time.thread_time() - t0) / calls
