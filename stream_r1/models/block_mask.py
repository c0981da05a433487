"""Block-causal attention masks for the full-sequence student forward (docs/method.md §4.2, §5 item 11).

A query token of latent frame ``i`` may attend a key token of frame ``j`` iff
``j // frames_per_block <= i // frames_per_block``: bidirectional inside a chunk of ``frames_per_block``
frames, causal across chunks. ``True`` = attend (SDPA's boolean convention).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def frame_chunk_ids(num_frames: int, tokens_per_frame: int, frames_per_block: int, device: torch.device) -> Tensor:
    """Chunk index of every token, ``[num_frames * tokens_per_frame]`` int64."""
    if frames_per_block < 1 or tokens_per_frame < 1 or num_frames < 1:
        raise ValueError(
            f"block mask needs num_frames, tokens_per_frame, frames_per_block >= 1, got "
            f"{num_frames}, {tokens_per_frame}, {frames_per_block}"
        )
    frames = torch.arange(num_frames, device=device).repeat_interleave(tokens_per_frame)
    return frames // frames_per_block


def dense_block_causal_mask(
    num_frames: int, tokens_per_frame: int, frames_per_block: int, device: torch.device | str = "cpu"
) -> Tensor:
    """Dense boolean block-causal mask for ``F.scaled_dot_product_attention``.

    Args:
        num_frames: latent frames in the sequence.
        tokens_per_frame: tokens per latent frame after patching.
        frames_per_block: frames per chunk (3 for Self-Forcing / Stream-R1).
        device: device of the mask.

    Returns:
        ``[N, N]`` bool, ``N = num_frames * tokens_per_frame``; ``mask[q, k]`` is True when q may attend k.
    """
    chunk = frame_chunk_ids(num_frames, tokens_per_frame, frames_per_block, torch.device(device))
    return chunk.view(-1, 1) >= chunk.view(1, -1)


def flex_block_causal_mask(
    num_frames: int, tokens_per_frame: int, frames_per_block: int, device: torch.device | str
) -> Any:
    """The same mask as a FlexAttention ``BlockMask`` (GPU fast path; flex has no CPU backward in torch 2.13).

    Returns:
        ``torch.nn.attention.flex_attention.BlockMask`` over ``N`` queries and keys.
    """
    from torch.nn.attention.flex_attention import create_block_mask

    chunk = frame_chunk_ids(num_frames, tokens_per_frame, frames_per_block, torch.device(device))
    n = chunk.numel()

    def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return chunk[q_idx] >= chunk[kv_idx]

    return create_block_mask(mask_mod, B=None, H=None, Q_LEN=n, KV_LEN=n, device=str(device))
