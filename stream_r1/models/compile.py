"""``torch.compile`` of the streaming student: one graph per cache geometry, none per chunk.

A rolling stream meets a handful of geometries while its window fills (stored frames 0, 3, 6 for
window 9 / chunk 3, each as a denoising read and a context write, plus the first read that fills the text
K/V cache) and then one geometry for ever: the frame offset and the stream position are Python ints
that dynamo turns into symbols the first time they change, the RoPE tables are sliced from fixed tables
on every call, and the KV cache evicts at store time, so nothing else varies from chunk to chunk.
Compilation is in place (``nn.Module.compile``): the model stays a ``CausalWanTransformer`` for the
denoiser, and its state dict keeps its keys.
"""

from __future__ import annotations

from typing import Any

import torch

from stream_r1.models.causal_wan import CausalWanTransformer


def resolve_compile(requested: bool | None, device: torch.device | str) -> bool:
    """The ``--compile`` default: on for CUDA (streaming FPS needs it), off elsewhere (compiling costs minutes
    on CPU, more than a short CPU run saves)."""
    return torch.device(device).type == "cuda" if requested is None else bool(requested)


def compile_student(model: CausalWanTransformer, *, backend: Any = "inductor") -> CausalWanTransformer:
    """Compile ``model``'s forward in place for streaming and return it.

    Args:
        model: the causal student (eval mode for inference).
        backend: a ``torch.compile`` backend (``"inductor"``; ``"eager"`` / a counting backend in tests).

    Returns:
        The same module, whose calls now run the compiled forward.
    """
    if not isinstance(model, CausalWanTransformer):
        raise TypeError(f"compile_student needs a CausalWanTransformer, got {type(model).__name__}")
    # dynamic=None: dynamo's automatic dynamic ints, so the growing frame offset becomes a symbol, not a graph.
    model.compile(backend=backend, dynamic=None)
    return model
