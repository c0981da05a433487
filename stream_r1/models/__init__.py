"""stream_r1.models: the Wan transformers (causal student, stock teacher/critic), KV cache, x0 wrappers.

Public names are imported lazily so ``import stream_r1.models`` stays cheap (diffusers loads on first use).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "CausalWanTransformer": "stream_r1.models.causal_wan",
    "CausalWanAttnProcessor": "stream_r1.models.causal_attention",
    "KVCache": "stream_r1.models.kv_cache",
    "CausalDenoiser": "stream_r1.models.denoiser",
    "BidirectionalDenoiser": "stream_r1.models.denoiser",
    "dense_block_causal_mask": "stream_r1.models.block_mask",
    "load_wan_transformer": "stream_r1.models.loading",
    "load_student": "stream_r1.models.loading",
    "load_generator_state_dict": "stream_r1.models.loading",
    "export_diffusers": "stream_r1.models.loading",
    "TextEncoder": "stream_r1.models.text_encoder",
    "WanVAE": "stream_r1.models.vae",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stream_r1.models' has no attribute {name!r}")
