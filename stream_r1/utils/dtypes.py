"""The one table from config dtype names (``model.dtype``, ``parallel.*_dtype``) to torch dtypes."""

from __future__ import annotations

import torch

TORCH_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""Every value of ``stream_r1.config.schema.DType``."""


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a config dtype name.

    Raises:
        ValueError: ``name`` is not one of :data:`TORCH_DTYPES`.
    """
    try:
        return TORCH_DTYPES[name]
    except KeyError:
        raise ValueError(f"dtype {name!r} is not one of {sorted(TORCH_DTYPES)}") from None
