"""3-D rotary position embedding with a frame offset (docs/method.md §4.1, §5 item 10).

Same tables and channel split as diffusers' ``WanRotaryPosEmbed`` (t/h/w = ``d - 4*(d//6)``, ``2*(d//6)``,
``2*(d//6)`` channels; 44/42/42 for head_dim 128, 8/4/4 for head_dim 16; theta 1e4; channel pairs
``(2i, 2i+1)`` rotated by one angle), but the temporal positions start at an arbitrary frame instead of
0 so a chunk, or the keys of a re-indexed [sink ++ window] cache, can be rotated on their own.

Under ``torch.compile`` the tables of one forward are sliced from per-axis tables on every call (a few kB
of work) and nothing is keyed by positions, so a new frame offset is a new value, never a new graph. In
eager mode a small memo keeps the last few :class:`Rope` objects (a KV-cached stream asks for the same
positions ``0 .. n-1`` on every forward once its window is full, and building them is ~25 small ops);
the same object coming back also tells a KV cache that rotated keys it kept are still valid. Rotation is
one complex multiply in eager mode (one kernel instead of seven) and the equivalent real arithmetic under
``torch.compile``, where inductor fuses it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.models.embeddings import get_1d_rotary_pos_embed
from torch import Tensor

_MEMO_SIZE = 8  # eager Rope objects kept per FrameRope (a stream needs 3, a training rollout a few more)


@dataclass(frozen=True)
class Rope:
    """Rotation of ``N`` tokens: one angle per channel pair.

    Attributes:
        cos: float32 ``[1, N, 1, head_dim // 2]``.
        sin: same.
        polar: ``cos + i sin`` complex64 (eager fast path), or None under ``torch.compile``.
    """

    cos: Tensor
    sin: Tensor
    polar: Tensor | None = None

    def tail(self, n: int) -> Rope:
        """The rotation of the last ``n`` tokens."""
        return self.rows(self.cos.shape[1] - n, self.cos.shape[1])

    def rows(self, start: int, end: int) -> Rope:
        """The rotation of tokens ``start .. end-1``."""
        polar = None if self.polar is None else self.polar[:, start:end]
        return Rope(self.cos[:, start:end], self.sin[:, start:end], polar)


class FrameRope:
    """Cos/sin per (frame, row, column) position, one table per axis kept per device.

    Args:
        head_dim: attention head dimension.
        max_seq_len: positions per axis in the table (``rope_max_seq_len`` of the Wan config).
        theta: RoPE base.
    """

    def __init__(self, head_dim: int, max_seq_len: int, theta: float = 10000.0) -> None:
        self.head_dim = head_dim
        self.max_seq_len = max_seq_len
        h_dim = w_dim = 2 * (head_dim // 6)
        self.split = [(head_dim - h_dim - w_dim) // 2, h_dim // 2, w_dim // 2]  # channel pairs per axis
        cos, sin = [], []
        for pairs in self.split:
            # float64 angles, float32 tables: exactly the buffers of WanRotaryPosEmbed off MPS (every
            # other column of its pairwise-repeated tables).
            c, s = get_1d_rotary_pos_embed(
                2 * pairs, max_seq_len, theta, use_real=True, repeat_interleave_real=True, freqs_dtype=torch.float64
            )
            cos.append(c[:, 0::2])
            sin.append(s[:, 0::2])
        self._tables = {torch.device("cpu"): (torch.cat(cos, dim=1), torch.cat(sin, dim=1))}
        self._memo: dict[tuple[int, int, int, int, torch.device], Rope] = {}

    def _on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        if device not in self._tables:
            cos, sin = self._tables[torch.device("cpu")]
            self._tables[device] = (cos.to(device), sin.to(device))
        return self._tables[device]

    def freqs(self, frame_start: int, num_frames: int, height: int, width: int, device: torch.device) -> Rope:
        """Rotation of the tokens of frames ``frame_start .. frame_start+num_frames-1`` on a ``height x width`` grid.

        Args:
            frame_start: temporal position of the first frame.
            num_frames: frames (post-patch).
            height: post-patch rows.
            width: post-patch columns.
            device: target device.

        Returns:
            :class:`Rope` over ``num_frames*height*width`` tokens in token order (f, h, w).

        Raises:
            ValueError: a position beyond the table (``rope_max_seq_len``).
        """
        end = frame_start + num_frames
        if frame_start < 0 or end > self.max_seq_len or height > self.max_seq_len or width > self.max_seq_len:
            raise ValueError(
                f"RoPE positions frames [{frame_start}, {end}) x {height} x {width} exceed rope_max_seq_len="
                f"{self.max_seq_len}; use a rolling cache (relative positions) or a model with a longer table"
            )
        device = torch.device(device)
        eager = not torch.compiler.is_compiling()
        key = (frame_start, num_frames, height, width, device)
        if eager and key in self._memo:
            return self._memo[key]
        shape = (num_frames, height, width)
        out = []
        for table in self._on(device):
            t_part, h_part, w_part = table.split(self.split, dim=1)
            ft = t_part[frame_start:end].view(num_frames, 1, 1, -1).expand(*shape, -1)
            fh = h_part[:height].view(1, height, 1, -1).expand(*shape, -1)
            fw = w_part[:width].view(1, 1, width, -1).expand(*shape, -1)
            out.append(torch.cat([ft, fh, fw], dim=-1).reshape(1, num_frames * height * width, 1, -1))
        cos, sin = out
        if not eager:
            return Rope(cos, sin)
        rope = Rope(cos, sin, torch.complex(cos, sin))
        if torch.is_inference_mode_enabled():
            return rope  # inference tensors could not be saved for a later backward
        if len(self._memo) >= _MEMO_SIZE:
            self._memo.clear()
        self._memo[key] = rope
        return rope


def apply_rope(x: Tensor, rope: Rope, out: Tensor | None = None) -> Tensor:
    """Rotate channel pairs ``(2i, 2i+1)`` of ``x`` (as diffusers' Wan processor does).

    Args:
        x: ``[B, N, heads, head_dim]``.
        rope: rotation of the ``N`` tokens.
        out: optional destination of ``x``'s shape and dtype (no autograd): the rotation is written into
            it, straight from the complex multiply for a contiguous float32 one in eager mode (no
            temporary), else copied.

    Returns:
        Rotated tensor in ``x.dtype`` (computed in float32 at least); ``out`` when given.
    """
    work = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    pairs = work.unflatten(-1, (-1, 2))
    if rope.polar is not None and not torch.compiler.is_compiling():
        if out is not None and out.dtype == work.dtype == torch.float32 and out.is_contiguous():
            # A contiguous destination runs the same vectorised kernel as a fresh result: the same bits.
            dest = torch.view_as_complex(out.unflatten(-1, (-1, 2)))
            torch.mul(torch.view_as_complex(pairs.contiguous()), rope.polar, out=dest)
            return out
        rotated = torch.view_as_real(torch.view_as_complex(pairs.contiguous()) * rope.polar)
    else:
        x1, x2 = pairs.unbind(-1)
        rotated = torch.stack([x1 * rope.cos - x2 * rope.sin, x1 * rope.sin + x2 * rope.cos], dim=-1)
    rotated = rotated.flatten(-2).to(x.dtype)
    return rotated if out is None else out.copy_(rotated)


def half_tables(cos: Tensor, sin: Tensor) -> Rope:
    """:class:`Rope` from diffusers' pairwise-repeated ``(cos, sin)`` ``[1, N, 1, head_dim]`` tables."""
    return Rope(cos[..., 0::2], sin[..., 1::2])
