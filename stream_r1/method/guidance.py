"""Teacher (real score) and critic (fake score) guidance (docs/method.md §1.4 step 3, §5 item 4).

The reference writes guidance as ``f = c + g * (c - u)`` with ``g = 3.0`` for the teacher, which is
standard classifier-free guidance with weight ``g + 1 = 4.0`` (``4c - 3u``); the critic uses
``g = 0`` (conditional only, no unconditional forward). The unconditional branch is conditioned on
Wan's fixed negative prompt, whose embedding is computed once per run and cached.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor


class X0Denoiser(Protocol):
    """What guidance needs from a score network (``stream_r1.models.denoiser.BidirectionalDenoiser``)."""

    def predict_x0(self, x_t: Tensor, t: Tensor, text_emb: Tensor) -> Tensor:
        """``x_t [B,F,C,H,W]``, ``t [B]``, ``text_emb [B,L,D]`` -> x0 ``[B,F,C,H,W]``."""
        ...


def apply_guidance(cond: Tensor, uncond: Tensor, guidance_scale: float) -> Tensor:
    """``cond + guidance_scale * (cond - uncond)`` (the reference's form; = CFG weight ``scale + 1``).

    Args:
        cond: prompt-conditioned x0 ``[B, F, C, H, W]``.
        uncond: negative-prompt-conditioned x0, same shape.
        guidance_scale: ``g`` (3.0 for the teacher).

    Returns:
        Guided x0, same shape and dtype as ``cond``.
    """
    return cond + guidance_scale * (cond - uncond)


class NegativePromptEmbedding:
    """The negative prompt's text embedding, computed on first use and then reused (§1.8).

    Args:
        prompt: the negative prompt (``cfg.dmd.negative_prompt``, Wan's fixed string).
        encode: the run's text encoder, ``list[str] -> Tensor [n, L, D]`` (e.g. ``TextEncoder.encode``).
    """

    def __init__(self, prompt: str, encode: Callable[[list[str]], Tensor]) -> None:
        self._prompt = prompt
        self._encode = encode
        self._embedding: Tensor | None = None

    @property
    def prompt(self) -> str:
        """The negative prompt text."""
        return self._prompt

    @property
    def computed(self) -> bool:
        """True once the embedding exists (the encoder has run exactly once)."""
        return self._embedding is not None

    def get(self) -> Tensor:
        """The cached embedding ``[1, L, D]`` (no grad); runs the encoder on the first call only.

        Raises:
            ValueError: the encoder did not return one ``[1, L, D]`` embedding.
        """
        if self._embedding is None:
            with torch.no_grad():
                emb = self._encode([self._prompt])
            if emb.dim() != 3 or emb.shape[0] != 1:
                raise ValueError(
                    f"the text encoder returned shape {tuple(emb.shape)} for one negative prompt; expected [1, L, D]"
                )
            self._embedding = emb.detach()
        return self._embedding

    def expand(self, batch_size: int) -> Tensor:
        """The embedding broadcast to ``[batch_size, L, D]`` (a view, no copy)."""
        emb = self.get()
        return emb.expand(batch_size, *emb.shape[1:])


def _match_batch(negative_emb: Tensor, batch_size: int) -> Tensor:
    if negative_emb.dim() != 3 or negative_emb.shape[0] not in (1, batch_size):
        raise ValueError(
            f"negative embedding must be [1, L, D] or [B={batch_size}, L, D]; got {tuple(negative_emb.shape)}"
        )
    return negative_emb.expand(batch_size, *negative_emb.shape[1:])


class GuidedScore:
    """An x0 score with optional guidance: the teacher (``g = dmd.guidance_scale``) or the critic.

    Args:
        denoiser: the score network (``BidirectionalDenoiser``).
        guidance_scale: ``g`` in ``c + g (c - u)``; 0 runs the conditional forward only.

    Raises:
        ValueError: a negative guidance scale.
    """

    def __init__(self, denoiser: X0Denoiser, guidance_scale: float) -> None:
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale={guidance_scale} must be >= 0 (0 = conditional only)")
        self.denoiser = denoiser
        self.guidance_scale = float(guidance_scale)

    @property
    def needs_negative(self) -> bool:
        """True when an unconditional (negative-prompt) forward is part of the score."""
        return self.guidance_scale != 0.0

    def __call__(self, x_t: Tensor, t: Tensor, text_emb: Tensor, negative_emb: Tensor | None = None) -> Tensor:
        """Guided x0 prediction.

        Args:
            x_t: noisy latents ``[B, F, C, H, W]``.
            t: timesteps ``[B]`` (float, one per sample).
            text_emb: prompt embeddings ``[B, L, D]``.
            negative_emb: negative-prompt embedding ``[1, L, D]`` or ``[B, L, D]``; required when
                ``guidance_scale > 0``.

        Returns:
            x0 ``[B, F, C, H, W]``.

        Raises:
            ValueError: guidance is on but no negative embedding was given, or its shape is wrong.
        """
        cond = self.denoiser.predict_x0(x_t, t, text_emb)
        if not self.needs_negative:
            return cond
        if negative_emb is None:
            raise ValueError(
                f"guidance_scale={self.guidance_scale} needs the negative-prompt embedding; pass "
                "NegativePromptEmbedding(...).get() or set the guidance scale to 0"
            )
        uncond = self.denoiser.predict_x0(x_t, t, _match_batch(negative_emb, x_t.shape[0]).to(text_emb.dtype))
        return apply_guidance(cond, uncond, self.guidance_scale)
