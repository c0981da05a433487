"""Values derived from a run config, each computed in this one place (torch-free).

Checkpoint paths are ``checkpoints.<name>`` resolved against ``checkpoints.root``; frame counts follow
the Wan VAE's causal temporal compression (latent frame 0 decodes to one pixel frame, every later
latent frame to four: ``T = 1 + 4 (F - 1)``); a latent frame count is valid when it is a positive
multiple of ``model.frames_per_block`` (whole chunks).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the schema imports this module for its frame-count rule
    from stream_r1.config.schema import RunConfig

VAE_TEMPORAL_STRIDE = 4
"""Pixel frames per latent frame after the first (Wan VAE)."""


def checkpoint_path(cfg: RunConfig, name: str) -> Path:
    """``checkpoints.<name>`` resolved against ``checkpoints.root`` (absolute paths are kept).

    Raises:
        ValueError: ``name`` is not a weights entry of ``checkpoints``.
    """
    names = [f.name for f in dataclasses.fields(cfg.checkpoints) if f.name != "root"]
    if name not in names:
        raise ValueError(f"checkpoints.{name} does not exist; one of {names}")
    p = Path(getattr(cfg.checkpoints, name))
    return p if p.is_absolute() else Path(cfg.checkpoints.root) / p


def pixel_frames(num_latent_frames: int) -> int:
    """Pixel frames decoded from ``F`` latent frames: ``1 + 4 (F - 1)`` (21 -> 81, 120 -> 477)."""
    return 1 + VAE_TEMPORAL_STRIDE * (num_latent_frames - 1)


def last_pixel_frame(latent_frame: int) -> int:
    """Index of the last pixel frame decoded from latent frame ``f`` (0 -> 0, f -> 4 f)."""
    return VAE_TEMPORAL_STRIDE * latent_frame


def chunk_pixel_frames(frames_per_block: int) -> tuple[int, int]:
    """(pixel frames of a later chunk, pixel frames of the first chunk) for ``frames_per_block`` latents."""
    return VAE_TEMPORAL_STRIDE * frames_per_block, pixel_frames(frames_per_block)


def latent_frames_problem(num_frames: object, frames_per_block: int, setting: str) -> str | None:
    """Why ``num_frames`` latent frames are not whole chunks (a one-line message with the fix), or None.

    Args:
        num_frames: the requested latent frame count (any object: CLI and config values both come here).
        frames_per_block: ``model.frames_per_block``.
        setting: how the value was given (``rollout.num_frames``, ``--num-frames``), named in the message.
    """
    if isinstance(num_frames, int) and not isinstance(num_frames, bool):
        if num_frames >= frames_per_block and num_frames % frames_per_block == 0:
            return None
        lo = max(frames_per_block, num_frames - num_frames % frames_per_block)
        hi = lo + frames_per_block if num_frames > lo else lo
        use = f"{lo} or {hi}" if hi != lo else f"{lo}"
    else:
        use = f"{7 * frames_per_block}"
    return (
        f"{setting}={num_frames!r} latent frames is not a positive multiple of model.frames_per_block="
        f"{frames_per_block}; use {use} (pixel frames = 1 + 4*(F-1), e.g. 21 -> 81), or change "
        "model.frames_per_block"
    )


def check_latent_frames(num_frames: object, frames_per_block: int, setting: str) -> int:
    """Return ``num_frames`` when it is a positive multiple of ``frames_per_block``; else ``ValueError``."""
    problem = latent_frames_problem(num_frames, frames_per_block, setting)
    if problem is not None:
        raise ValueError(problem)
    return num_frames  # type: ignore[return-value]
