"""``--device`` parsing: a bad device string or a missing accelerator fails before any model loads."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def resolve_device(name: str | torch.device, flag: str = "--device") -> torch.device:
    """``name`` as a ``torch.device`` that exists on this machine.

    Args:
        name: ``cpu``, ``cuda``, ``cuda:N``, ``mps``, ... or a ``torch.device``.
        flag: The option the user set (named in the error).

    Raises:
        ValueError: ``name`` is no torch device type, or names an accelerator (or an index) this
            machine does not have.
    """
    import torch

    if isinstance(name, torch.device):
        dev = name
    else:
        try:
            dev = torch.device(str(name))
        except (RuntimeError, TypeError):
            raise ValueError(
                f"{flag} {str(name)!r} is not a torch device; use cpu, cuda or cuda:N (e.g. {flag} cpu)"
            ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{flag} {str(name)!r}: CUDA is not available on this machine "
                             f"(torch {torch.__version__}, torch.cuda.is_available() is False); use {flag} cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"{flag} {str(name)!r}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1}); "
                             f"choose one of them")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{flag} {str(name)!r}: MPS is not available on this machine; use {flag} cpu")
    elif dev.type != "cpu":
        backend = getattr(torch, dev.type, None)
        available = getattr(backend, "is_available", None)
        if not callable(available) or not available():
            raise ValueError(f"{flag} {str(name)!r}: no {dev.type} device is available here; use {flag} cpu or cuda")
    return dev
