"""PyTorch CPU-allocator defaults the ``stream-r1`` command applies before torch allocates anything.

``THP_MEM_ALLOC_ENABLE=1`` is read once, at torch's first CPU allocation, by its allocator
(``c10/core/alloc_cpu.cpp``): allocations of 2 MB or more are then aligned to 2 MB and marked
``madvise(MADV_HUGEPAGE)``, so the kernel backs them with transparent huge pages wherever the system
allows it (``/sys/kernel/mm/transparent_hugepage/enabled`` set to ``always`` or ``madvise``; with
``never`` the setting does nothing).

Why: glibc serves large blocks straight from ``mmap`` and unmaps them on free, so every large tensor is
faulted in 4 KB at a time when it is first written, and the kernel zeroes each page. A CPU decode of 6
latent frames at 30x52 by the tiny Wan VAE spent more system time (1.9 s) than computing (1.0 s), on 1.1 M
page faults; with huge pages it took 7-9 K faults and 0.3 s of system time (docs/benchmarks.md, "Streaming
speed-up"). Small tensors, and so the transformer's streaming steps, are unaffected. Allocations of 2 MB
and more round up to a 2 MB multiple, at most 2 MB per large tensor.

The command only sets a default: an explicit ``THP_MEM_ALLOC_ENABLE=0`` in the environment is kept.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

CPU_ALLOCATOR_DEFAULTS: dict[str, str] = {"THP_MEM_ALLOC_ENABLE": "1"}
"""Environment defaults for torch's CPU allocator (see the module docstring)."""


def apply_cpu_allocator_defaults(environ: MutableMapping[str, str] | None = None) -> bool:
    """Set each of :data:`CPU_ALLOCATOR_DEFAULTS` in ``environ`` (default ``os.environ``) unless already set.

    Returns:
        Whether the settings can still take effect in this process: False once torch is imported (its
        allocator may have read the environment already); child processes inherit them either way.
    """
    env = os.environ if environ is None else environ
    for key, value in CPU_ALLOCATOR_DEFAULTS.items():
        env.setdefault(key, value)
    return "torch" not in sys.modules
