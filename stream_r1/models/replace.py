"""Swap every module of one exact type inside a model for a replacement built from it (same parameters)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def replace_modules(model: nn.Module, stock: type[nn.Module], replacing: Callable[[nn.Module], nn.Module]) -> int:
    """Replace each submodule whose type is exactly ``stock`` by ``replacing(module)``.

    Exact type, not ``isinstance``: a subclass that already replaced a stock module is left alone, so the
    call is idempotent.

    Returns:
        How many modules were replaced.
    """
    names = [name for name, module in model.named_modules() if type(module) is stock]
    for name in names:
        model.set_submodule(name, replacing(model.get_submodule(name)))
    return len(names)
