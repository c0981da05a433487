"""Self-Forcing training rollout of the causal student (docs/method.md §1.3, §5 items 6-8).

Chunk by chunk (``frames_per_block`` latent frames), each chunk starts from fresh Gaussian noise and
walks the warped few-step schedule ``[1000, 937.5, 833.3, 625]`` up to the rollout's exit step k:

- steps ``i < k``: predict x0 under no_grad, re-noise it with *fresh* noise to the next timestep
  (the consistency-style sampler, not an ODE step);
- step ``k``: predict x0 with gradient (when ``grad_enabled``) — the only forward of the chunk that
  carries gradient; the chunk's output is this x0;
- then a no-grad context pass at ``t = context_noise`` writes the chunk's K/V into the cache (skipping
  it would cache the K/V of the noisy exit-step input and change the model). Its input is the chunk's
  output noised to that level, ``add_noise(x0, eps, context_noise)`` with fresh noise, as Self-Forcing's
  training pipeline does; at ``context_noise = 0`` it is the clean x0 (see :func:`context_input`).

Denoising forwards only *read* the cache (``predict_x0``); ``write_context`` is its only writer, so
gradient checkpointing can replay a grad-enabled forward safely and the gradient is truncated at chunk
boundaries (no BPTT through the cache). The exit step(s) and the RNG are inputs: the trainer draws k
on rank 0 and broadcasts it; this module draws nothing but noise from the given ``rng``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from stream_r1.config.derived import check_latent_frames
from stream_r1.config.schema import RolloutConfig
from stream_r1.diffusion import add_noise, warped_timesteps
from stream_r1.models.denoiser import CausalDenoiser
from stream_r1.models.kv_cache import KVCache


@dataclass(frozen=True)
class RolloutInfo:
    """What a rollout did (logged by the trainer).

    Attributes:
        exit_steps: exit index k of every chunk (all equal when one int was passed).
        timesteps: the student's step list (warped), e.g. ``(1000, 937.5, 833.33, 625)``.
        exit_timesteps: the timestep at which each chunk's output was predicted.
        num_blocks: chunks generated.
        num_forwards: student forwards run (denoising + context passes).
        num_grad_forwards: forwards run with gradient enabled (one per chunk, or 0).
    """

    exit_steps: tuple[int, ...]
    timesteps: tuple[float, ...]
    exit_timesteps: tuple[float, ...]
    num_blocks: int
    num_forwards: int
    num_grad_forwards: int

    @property
    def exit_step(self) -> int:
        """The shared exit step (the first chunk's when steps differ per chunk)."""
        return self.exit_steps[0]


def student_timesteps(cfg: RolloutConfig) -> list[float]:
    """The student's few-step list: warped through the shifted table when ``cfg.warp_denoising_steps`` (§1.2)."""
    if cfg.warp_denoising_steps:
        return warped_timesteps(list(cfg.denoising_steps), cfg.student_sigma_shift)
    return [float(t) for t in cfg.denoising_steps]


def context_input(x0: Tensor, context_noise: float, rng: torch.Generator, sigma_shift: float) -> Tensor:
    """The input of a chunk's context pass: its output ``x0 [B, f, C, H, W]`` noised to ``context_noise``.

    ``x_ctx = (1 - sigma) x0 + sigma eps`` with ``sigma`` the student's table entry for ``context_noise``
    and ``eps`` one fresh draw ``[B, f, C, H, W]`` from ``rng`` (on ``rng.device``); the pass then labels
    it with that timestep, so the cached K/V are those of an input really at that noise level (Self-Forcing's
    ``context_noise``). ``context_noise = 0`` returns ``x0`` itself and draws nothing: clean context, as the
    reference's inference pipeline caches it (its training pipeline's nearest-entry lookup would give the
    smallest table sigma, about 0.005 at shift 5, for t = 0; the table has no zero entry).
    """
    if context_noise == 0:
        return x0
    eps = torch.randn(x0.shape, generator=rng, dtype=x0.dtype, device=rng.device).to(x0.device)
    t = torch.full(x0.shape[:2], float(context_noise), dtype=torch.float32, device=x0.device)
    return add_noise(x0, eps, t, sigma_shift)


def _exit_list(exit_step: int | Sequence[int], num_blocks: int, num_steps: int) -> tuple[int, ...]:
    exits = (int(exit_step),) * num_blocks if isinstance(exit_step, int) else tuple(int(k) for k in exit_step)
    if len(exits) != num_blocks:
        raise ValueError(
            f"exit_step lists {len(exits)} values for {num_blocks} chunks; pass one int (shared) or one per chunk"
        )
    bad = sorted({k for k in exits if not 0 <= k < num_steps})
    if bad:
        raise ValueError(f"exit_step {bad} outside [0, {num_steps - 1}] (one index into the {num_steps}-step list)")
    return exits


def self_forcing_rollout(
    student: CausalDenoiser,
    text_emb: Tensor,
    cfg: RolloutConfig,
    *,
    frames_per_block: int,
    exit_step: int | Sequence[int],
    rng: torch.Generator,
    grad_enabled: bool = True,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, RolloutInfo]:
    """Generate one training rollout ``[B, F, C, H, W]`` with gradient only through the exit-step forwards.

    Noise draws from ``rng``, in order: the initial noise of all frames ``[B, F, C, H, W]``, then, chunk by
    chunk, one fresh ``[B, frames_per_block, C, H, W]`` draw per re-noising step and (when
    ``cfg.context_noise > 0``, every chunk but the last) one for its context pass. Noise is drawn
    on ``rng.device`` and moved to ``text_emb.device``, so a CPU ``rng`` gives device-independent draws.

    Args:
        student: the causal student (``CausalDenoiser``).
        text_emb: prompt embeddings ``[B, L, D]``.
        cfg: rollout config (``num_frames``, latent shape, steps, shift, ``context_noise``).
        frames_per_block: latent frames per chunk (``model.frames_per_block``; the denoiser's chunking).
        exit_step: index k into the step list: one int shared by all chunks (§1.3), or one per chunk.
        rng: torch RNG for every noise draw.
        grad_enabled: False for the critic's rollout (no forward keeps a graph).
        dtype: latent dtype (default ``text_emb.dtype``).

    Returns:
        ``(x, info)``: the rollout ``[B, F, C, H, W]`` (x0 of every chunk at its exit step; requires
        grad iff ``grad_enabled`` and grad mode is on) and :class:`RolloutInfo`.

    Raises:
        ValueError: ``num_frames`` not a multiple of ``frames_per_block``, a bad exit step, or a
            text embedding that is not ``[B, L, D]``.
    """
    if text_emb.dim() != 3:
        raise ValueError(f"text_emb must be [B, L, D]; got shape {tuple(text_emb.shape)}")
    check_latent_frames(cfg.num_frames, frames_per_block, "rollout.num_frames")
    steps = student_timesteps(cfg)
    num_blocks = cfg.num_frames // frames_per_block
    exits = _exit_list(exit_step, num_blocks, len(steps))
    batch, device = text_emb.shape[0], text_emb.device
    dtype = dtype or text_emb.dtype
    chunk_shape = (batch, frames_per_block, cfg.latent_channels, cfg.latent_height, cfg.latent_width)
    full_shape = (batch, cfg.num_frames, *chunk_shape[2:])

    noise = torch.randn(full_shape, generator=rng, dtype=dtype, device=rng.device).to(device)
    cache = student.new_cache(
        batch, cfg.num_frames, (cfg.latent_height, cfg.latent_width), rolling=False, dtype=dtype, device=device
    )
    outputs: list[Tensor] = []
    num_forwards = num_grad = 0
    for block, k in enumerate(exits):
        start = block * frames_per_block
        x = noise[:, start : start + frames_per_block]
        for i in range(k):
            # Steps before the exit: no graph, then fresh noise to the next timestep (§1.3, §5 item 6).
            with torch.no_grad():
                x0 = student.predict_x0(x, _per_frame(steps[i], chunk_shape, device), text_emb, cache, start)
                eps = torch.randn(chunk_shape, generator=rng, dtype=dtype, device=rng.device).to(device)
                x = add_noise(x0, eps, _per_frame(steps[i + 1], chunk_shape, device), cfg.student_sigma_shift)
            num_forwards += 1
        with torch.set_grad_enabled(grad_enabled and torch.is_grad_enabled()):
            x0 = student.predict_x0(
                x, _per_frame(steps[k], chunk_shape, device), text_emb, _frozen_view(cache), start
            )
        num_forwards += 1
        num_grad += int(x0.requires_grad)
        outputs.append(x0)
        if block + 1 < num_blocks:
            # Clean K/V of this chunk for the next ones; the last chunk's context is never read.
            with torch.no_grad():
                x_ctx = context_input(x0.detach(), cfg.context_noise, rng, cfg.student_sigma_shift)
                student.write_context(x_ctx, text_emb, cache, start, t_context=float(cfg.context_noise))
            num_forwards += 1
    info = RolloutInfo(
        exit_steps=exits,
        timesteps=tuple(steps),
        exit_timesteps=tuple(steps[k] for k in exits),
        num_blocks=num_blocks,
        num_forwards=num_forwards,
        num_grad_forwards=num_grad,
    )
    return torch.cat(outputs, dim=1), info


def _frozen_view(cache: KVCache) -> KVCache:
    """A view of ``cache`` whose lengths stay as they are now, sharing its K/V buffers.

    Gradient checkpointing replays the exit-step forward during backward, after later chunks' context
    passes have advanced the cache; the replay must attend to exactly the frames the original forward
    saw (§5 item 7). Later writes only fill rows past the current length (training caches are
    non-rolling, so nothing is evicted or shifted), hence the shared buffers still hold the same rows.
    """
    # No text K/V: one computed under no_grad must never stand in for a grad-enabled forward's (§5 item 7).
    return dataclasses.replace(
        cache,
        keys=list(cache.keys),
        values=list(cache.values),
        cross_keys=[None] * cache.num_layers,
        cross_values=[None] * cache.num_layers,
        cross_source=None,
    )


def _per_frame(t: float, chunk_shape: tuple[int, ...], device: torch.device) -> Tensor:
    """Per-frame timesteps ``[B, f]`` filled with ``t`` (float32, as the time embedding takes it)."""
    return torch.full(chunk_shape[:2], float(t), dtype=torch.float32, device=device)
