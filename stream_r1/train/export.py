"""Export the trained generator (and its EMA) for inference and registration.

Two layouts: a diffusers ``WanTransformer3DModel`` directory per network
(``generator/``, ``generator_ema/``; H2's ``export_diffusers``) and the reference ``.pt`` layout
``{"generator": {"model.<original Wan key>": t}, "generator_ema": {...}}`` (docs/method.md §1.10) that
Self-Forcing / Reward Forcing / Stream-R1 ``inference.py`` and our loaders read.
"""

from __future__ import annotations

from pathlib import Path

import torch

from stream_r1.models.loading import export_diffusers, load_wan_transformer
from stream_r1.models.wan_keys import diffusers_to_original_key
from stream_r1.utils.io import atomic_write


def reference_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Diffusers-named weights -> ``model.<original Wan key>`` (the WanDiffusionWrapper naming)."""
    return {f"model.{diffusers_to_original_key(k)}": v.detach().cpu().contiguous() for k, v in state.items()}


def write_reference_pt(path: str | Path, generator: dict[str, torch.Tensor], ema: dict[str, torch.Tensor] | None) -> Path:
    """Atomically write ``{"generator": ..., ["generator_ema": ...]}`` in the reference layout."""
    payload = {"generator": reference_layout(generator)}
    if ema:
        payload["generator_ema"] = reference_layout(ema)
    return atomic_write(path, lambda p: torch.save(payload, p))


def export_generator(
    out_dir: str | Path,
    base_dir: str | Path,
    generator: dict[str, torch.Tensor],
    ema: dict[str, torch.Tensor] | None,
) -> dict[str, Path]:
    """Write ``out_dir/{generator,generator_ema}/`` (diffusers) and ``out_dir/model.pt`` (reference).

    Args:
        out_dir: Export folder.
        base_dir: The student architecture directory (config source).
        generator: Full diffusers-named generator state dict.
        ema: EMA shadow (trainable parameters) or None.

    Returns:
        ``{"generator": dir, "generator_ema": dir?, "model.pt": file}``.
    """
    out_dir = Path(out_dir)
    out: dict[str, Path] = {}
    model = load_wan_transformer(base_dir, causal=False, dtype=torch.float32)
    for name, state in (("generator", generator), ("generator_ema", ema)):
        if not state:
            continue
        full = dict(model.state_dict())
        full.update({k: v.to(torch.float32) for k, v in state.items()})
        model.load_state_dict(full, strict=True)
        out[name] = export_diffusers(model, out_dir / name)
    out["model.pt"] = write_reference_pt(out_dir / "model.pt", generator, ema)
    return out
