"""Training and evaluation clip lists of the shapes world (which prompt, seed and mode each clip has)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stream_r1.shapes.world import HELD_OUT_SEED_BASE, render, split_prompts
from stream_r1.utils.seeding import make_rng

DEGRADED_MODES: tuple[str, ...] = ("blur", "jitter", "drift")


@dataclass(frozen=True, slots=True)
class Clip:
    """One clip to render: ``render(prompt, seed, frames, size, mode)``."""

    prompt: str
    seed: int
    mode: str = "clean"


def teacher_clips(per_prompt: int, degraded_fraction: float, seed: int) -> list[Clip]:
    """The teacher's training set: ``per_prompt`` clips of every training prompt, a mixture of modes.

    Exactly ``round(degraded_fraction * per_prompt)`` clips of each prompt are degraded (cycling through
    blur, jitter, drift), so every prompt has both good and bad modes under the same text.
    """
    train, _ = split_prompts()
    n_bad = round(degraded_fraction * per_prompt)
    clips = []
    for i, prompt in enumerate(train):
        for j in range(per_prompt):
            mode = DEGRADED_MODES[(i + j) % len(DEGRADED_MODES)] if j < n_bad else "clean"
            clips.append(Clip(prompt, seed * 100_003 + i * per_prompt + j, mode))
    order = torch.randperm(len(clips), generator=make_rng(seed, "teacher-clips")).tolist()
    return [clips[k] for k in order]


def held_out_clips(per_prompt: int, mode: str = "clean") -> list[Clip]:
    """Clips of every held-out prompt with held-out seeds."""
    _, held = split_prompts()
    return [Clip(p, HELD_OUT_SEED_BASE + j, mode) for p in held for j in range(per_prompt)]


def render_clips(clips: list[Clip], frames: int, size: int) -> torch.Tensor:
    """``[N, T, 3, size, size]`` pixels of ``clips``."""
    return torch.stack([render(c.prompt, c.seed, frames, size, c.mode) for c in clips])
