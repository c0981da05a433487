"""Explicit RNG: ``torch.Generator`` objects (named ``rng`` throughout) derived from (base seed, rank, step); no global RNG changes at import."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(base: int, *parts: int | str) -> int:
    """A 63-bit seed mixed from ``base`` and any number of ints/strings (rank, step, purpose)."""
    h = hashlib.sha256(repr((int(base), *parts)).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def make_rng(base: int, *parts: int | str, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` seeded with :func:`derive_seed`."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(base, *parts))
    return g
