"""3-D rotary position embedding with a frame offset (docs/method.md §4.1, §5 item 10).

Same tables and channel split as diffusers' ``WanRotaryPosEmbed`` (t/h/w = ``d - 4*(d//6)``, ``2*(d//6)``,
``2*(d//6)`` channels; 44/42/42 for head_dim 128, 8/4/4 for head_dim 16; theta 1e4; cos/sin interleaved
pairwise), but the temporal positions start at an arbitrary frame instead of 0 so a chunk, or the keys
of a re-indexed [sink ++ window] cache, can be rotated on their own.
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import get_1d_rotary_pos_embed
from torch import Tensor


class FrameRope:
    """Cos/sin tables for (frame, row, column) positions, cached per device.

    Args:
        head_dim: attention head dimension.
        max_seq_len: positions per axis in the table (``rope_max_seq_len`` of the Wan config).
        theta: RoPE base.
    """

    def __init__(self, head_dim: int, max_seq_len: int, theta: float = 10000.0) -> None:
        self.head_dim = head_dim
        self.max_seq_len = max_seq_len
        self.h_dim = self.w_dim = 2 * (head_dim // 6)
        self.t_dim = head_dim - self.h_dim - self.w_dim
        cos, sin = [], []
        for dim in (self.t_dim, self.h_dim, self.w_dim):
            # float64 angles, float32 tables: exactly the buffers of WanRotaryPosEmbed off MPS.
            c, s = get_1d_rotary_pos_embed(
                dim, max_seq_len, theta, use_real=True, repeat_interleave_real=True, freqs_dtype=torch.float64
            )
            cos.append(c)
            sin.append(s)
        self._cos = torch.cat(cos, dim=1)
        self._sin = torch.cat(sin, dim=1)
        self._per_device: dict[torch.device, tuple[Tensor, Tensor]] = {}
        # (start, frames, h, w, device) -> (cos, sin); a stream reuses a handful of geometries every step.
        self._grids: dict[tuple, tuple[Tensor, Tensor]] = {}

    def _tables(self, device: torch.device) -> tuple[Tensor, Tensor]:
        device = torch.device(device)
        if device not in self._per_device:
            self._per_device[device] = (self._cos.to(device), self._sin.to(device))
        return self._per_device[device]

    def freqs(
        self, frame_start: int, num_frames: int, height: int, width: int, device: torch.device
    ) -> tuple[Tensor, Tensor]:
        """Cos/sin for tokens of frames ``frame_start .. frame_start+num_frames-1`` on a ``height x width`` grid.

        Args:
            frame_start: temporal position of the first frame.
            num_frames: frames (post-patch).
            height: post-patch rows.
            width: post-patch columns.
            device: target device.

        Returns:
            ``(cos, sin)``, each float32 ``[1, num_frames*height*width, 1, head_dim]`` in token order (f, h, w).

        Raises:
            ValueError: a position beyond the table (``rope_max_seq_len``).
        """
        end = frame_start + num_frames
        if frame_start < 0 or end > self.max_seq_len or height > self.max_seq_len or width > self.max_seq_len:
            raise ValueError(
                f"RoPE positions frames [{frame_start}, {end}) x {height} x {width} exceed rope_max_seq_len="
                f"{self.max_seq_len}; use a rolling cache (relative positions) or a model with a longer table"
            )
        key = (frame_start, num_frames, height, width, torch.device(device))
        if key in self._grids:
            return self._grids[key]
        cos_all, sin_all = self._tables(device)
        out = []
        for table in (cos_all, sin_all):
            t_part, h_part, w_part = table.split([self.t_dim, self.h_dim, self.w_dim], dim=1)
            shape = (num_frames, height, width)
            ft = t_part[frame_start:end].view(num_frames, 1, 1, -1).expand(*shape, -1)
            fh = h_part[:height].view(1, height, 1, -1).expand(*shape, -1)
            fw = w_part[:width].view(1, 1, width, -1).expand(*shape, -1)
            out.append(torch.cat([ft, fh, fw], dim=-1).reshape(1, num_frames * height * width, 1, -1))
        if len(self._grids) >= 16:  # bounded: a few hundred MB at most at 1.3B scale
            self._grids.clear()
        self._grids[key] = (out[0], out[1])
        return out[0], out[1]


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs ``(2i, 2i+1)`` of ``x`` (as diffusers' Wan processor does).

    Args:
        x: ``[B, N, heads, head_dim]``.
        cos: ``[1, N, 1, head_dim]`` (pairwise repeated).
        sin: same.

    Returns:
        Rotated tensor in ``x.dtype`` (computed in float32 at least).
    """
    work = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    x1, x2 = work.unflatten(-1, (-1, 2)).unbind(-1)
    c = cos[..., 0::2]
    s = sin[..., 1::2]
    out = torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2)
    return out.to(x.dtype)
