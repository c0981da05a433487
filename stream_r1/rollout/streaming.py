"""Streaming inference rollout of the causal student (docs/method.md §1.11, §2.4, §5 items 1, 8).

For each chunk of ``frames_per_block`` latent frames at stream position ``frame_offset``:

1. ``x = eps`` (fresh Gaussian noise from the given ``torch.Generator``);
2. for each warped timestep ``t_i`` (e.g. ``[1000, 937.5, 833.33, 625]``): ``x0 = G(x, t_i, cache)``
   (read-only cache); if a next step exists, ``x = add_noise(x0, eps_new, t_{i+1})`` with **fresh** noise
   (the consistency-style sampler, not an ODE step); the chunk's output is the last ``x0``;
3. the context pass ``G(x_ctx, t = context_t)`` writes the chunk's K/V into the cache, with ``x_ctx`` the
   chunk's x0 noised to ``context_t`` by a fresh draw (x0 itself at ``context_t = 0``), exactly as the
   training rollout does (:func:`stream_r1.rollout.self_forcing.context_input`), so the model reads at
   inference the cache it was trained on;
4. yield :class:`StreamChunk` (so the VAE can decode while the next chunk is generated).

``rolling=True`` uses the Reward Forcing / Stream-R1 cache (window ``local_attn_frames``, sink, EMA sink
on eviction): memory and per-chunk cost stay constant for any stream length. ``rolling=False`` uses a
full cache of ``num_frames`` frames (Self-Forcing geometry; its absolute RoPE limits the length).

Efficiency: one preallocated cache, one preallocated noise buffer and per-step timestep tensors and table
sigmas reused for every chunk, each timestep tensor's time/text conditioning computed once per stream
(the cache's :class:`~stream_r1.models.condition_memo.ConditionMemo`); everything runs without autograd.
The student's weights must stay fixed while a stream runs: in-place writes to the condition embedder's
parameters are noticed (version counters), writes that preserve version counters (FSDP2's all-gather
into its unsharded parameters) are not.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from stream_r1.config.derived import check_latent_frames
from stream_r1.diffusion import add_noise_sigma, lookup_sigma
from stream_r1.models.condition_memo import ConditionMemo
from stream_r1.models.denoiser import CausalDenoiser


@dataclass(frozen=True)
class StreamChunk:
    """One generated chunk.

    Attributes:
        index: chunk number (0-based).
        frame_offset: latent frame index of the chunk's first frame in the stream.
        x0: clean latents ``[B, f, C, H, W]`` (library layout, the denoiser's dtype).
        latency_ms: wall time of the chunk (all denoising steps + the context pass), device-synchronised.
    """

    index: int
    frame_offset: int
    x0: Tensor
    latency_ms: float


def _validate(
    denoiser: CausalDenoiser,
    text_emb: Tensor,
    num_frames: int,
    latent_shape: tuple[int, int, int],
    timesteps: Sequence[float],
    rng: torch.Generator,
    rolling: bool,
    device: torch.device,
) -> None:
    check_latent_frames(num_frames, denoiser.frames_per_block, "num_frames")
    if len(latent_shape) != 3 or latent_shape[0] != denoiser.in_channels:
        raise ValueError(f"latent_shape={tuple(latent_shape)} must be (C={denoiser.in_channels}, H, W)")
    if len(timesteps) == 0:
        raise ValueError("timesteps is empty; pass the warped list, e.g. [1000, 937.5, 833.33, 625]")
    if text_emb.dim() != 3:
        raise ValueError(f"text_emb must be [B, L, D], got {tuple(text_emb.shape)}")
    if rng.device.type != device.type:
        raise ValueError(
            f"rng is on {rng.device} but the rollout runs on {device}; "
            f"create it with torch.Generator(device='{device.type}')"
        )
    if rolling and denoiser.local_attn_frames == -1:
        raise ValueError("rolling=True needs a denoiser with local_attn_frames != -1 (model.local_attn_frames=9)")
    rope_len = int(denoiser.transformer.config.rope_max_seq_len)
    if not rolling and denoiser.local_attn_frames == -1 and num_frames > rope_len:
        raise ValueError(
            f"num_frames={num_frames} exceeds the model's absolute RoPE table ({rope_len} frames) with a full "
            "cache; use rolling=True (windowed cache, relative positions) or fewer frames"
        )


def stream_chunks(
    denoiser: CausalDenoiser,
    text_emb: Tensor,
    *,
    num_frames: int,
    latent_shape: tuple[int, int, int],
    timesteps: Sequence[float],
    rng: torch.Generator,
    rolling: bool,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    context_t: float = 0.0,
) -> Iterator[StreamChunk]:
    """Generate a latent video chunk by chunk.

    Args:
        denoiser: the causal student wrapper (its ``frames_per_block``, window and sink define the geometry).
        text_emb: prompt embeddings ``[B, L, D]``.
        num_frames: latent frames to generate (multiple of ``frames_per_block``).
        latent_shape: ``(C, H, W)`` of one latent frame.
        timesteps: the student's steps, e.g. ``warped_timesteps([1000, 750, 500, 250], 5.0)``.
        rng: source of every noise draw (same seed -> same video).
        rolling: rolling window cache with EMA sink (True) or a full cache of ``num_frames`` frames.
        dtype: latent/cache dtype (default: the transformer's parameter dtype).
        device: default ``text_emb.device``.
        context_t: timestep of the context pass (``rollout.context_noise``, 0).

    Yields:
        :class:`StreamChunk` per chunk, in order.

    Raises:
        ValueError: bad frame count, latent shape, empty steps, rng on another device (before any
            model work).
    """
    dev = torch.device(device) if device is not None else text_emb.device
    run_dtype = dtype or denoiser.transformer.patch_embedding.weight.dtype
    _validate(denoiser, text_emb, num_frames, tuple(latent_shape), timesteps, rng, rolling, dev)
    return _generate(denoiser, text_emb.to(dev, run_dtype), num_frames, tuple(latent_shape), list(timesteps),
                     rng, rolling, run_dtype, dev, float(context_t))


@torch.no_grad()
def _generate(
    denoiser: CausalDenoiser,
    text: Tensor,
    num_frames: int,
    latent_shape: tuple[int, int, int],
    timesteps: list[float],
    rng: torch.Generator,
    rolling: bool,
    dtype: torch.dtype,
    device: torch.device,
    context_t: float,
) -> Iterator[StreamChunk]:
    # torch's no_grad decorator re-enters on every resume of a generator, so the caller's grad mode
    # between chunks is left untouched.
    b, f = text.shape[0], denoiser.frames_per_block
    c, h, w = latent_shape
    cache = denoiser.new_cache(b, num_frames, (h, w), rolling=rolling, dtype=dtype, device=device)
    # The weights stay fixed for the whole stream, so the time/text conditioning of each of the steps'
    # timestep tensors is computed once per stream (stream_r1.models.condition_memo says why only here).
    cache.conditions = ConditionMemo()
    cache.bind_text(text)  # a compiled student leaves the text binding to its caller
    noise = torch.empty((b, f, c, h, w), dtype=torch.float32, device=device)
    steps = [torch.full((b, f), float(t), device=device) for t in timesteps]
    steps_ctx = torch.full((b, f), float(context_t), device=device)
    # The table sigma of every step, looked up once per stream instead of once per step and chunk.
    sigmas = [lookup_sigma(t, denoiser.shift) for t in steps]
    sigma_ctx = lookup_sigma(steps_ctx, denoiser.shift)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for index in range(num_frames // f):
        offset = index * f
        sync()
        start = time.perf_counter()
        # Noise is drawn in fp32 so a seed gives the same video in every run dtype.
        x = noise.normal_(generator=rng).to(dtype, copy=True)
        x0 = x
        for i, t in enumerate(steps):
            x0 = denoiser.predict_x0(x, t, text, cache, offset, sigma=sigmas[i])
            if i + 1 < len(steps):
                x = add_noise_sigma(x0, noise.normal_(generator=rng), sigmas[i + 1])
        x_ctx = x0 if context_t == 0 else add_noise_sigma(x0, noise.normal_(generator=rng), sigma_ctx)
        denoiser.write_context(x_ctx, text, cache, offset, t_context=steps_ctx)
        sync()
        yield StreamChunk(index, offset, x0, (time.perf_counter() - start) * 1000.0)
