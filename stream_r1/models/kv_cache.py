"""Explicit, preallocated self-attention KV cache for the streaming student (docs/method.md §1.3, §2.4).

Geometry (frames are *latent* frames; one frame = ``tokens_per_frame`` = (H/2)*(W/2) tokens):

* The cache stores **un-rotated** keys (after the q/k RMSNorm) and values, per layer
  ``[B, capacity_tokens, heads, head_dim]``, preallocated once. ``length_frames`` frames are valid,
  ``frames_written`` counts every frame ever appended (the stream position).
* A chunk of ``f`` new frames attends to the *virtual append* of its own fresh K/V to the cache:
  ``S = stored (after the eviction the append would cause) ++ new`` (``n = len(S)`` frames), then

  - ``window_frames == -1`` (full attention, Self-Forcing): keys = all of ``S``;
  - else (Reward Forcing / Stream-R1, §2.4): keys = ``S[:sink] ++ S[max(sink, n - (window - sink)):]``
    i.e. the sink frames plus the most recent ``window - sink`` frames (the current chunk included).

  RoPE is applied at read time with contiguous frame positions ``0 .. k-1`` over the attended keys and
  the queries take the last ``f`` positions. With ``window_frames == -1`` and no eviction these are
  exactly the absolute positions, so the cached path reproduces the block-masked full-sequence forward.
* Eviction happens only when an append would overflow ``capacity_frames`` (``rolling=True``): the
  ``e`` oldest non-sink frames are dropped, the rest roll left. If ``e == sink_frames`` the sink becomes
  ``alpha * sink + (1 - alpha) * evicted`` (EMA sink, alpha = 0.999), otherwise the first ``min(e, sink)``
  sink frames are overwritten by the evicted ones (RF ``causal_model.py`` rule). A non-rolling cache that
  would overflow raises instead (Self-Forcing's full cache cannot go past its capacity, §1.11).

Reads (:meth:`KVCache.attended`) never mutate the cache, so gradient-checkpoint replays of a denoising
step see identical K/V (docs/method.md §5 item 7). :meth:`KVCache.store` (called only by the no-grad context
pass) writes one layer, :meth:`KVCache.advance` then moves the lengths once all layers have written.

A separate cross-attention cache holds the text K/V per layer; it is filled and used only outside
autograd (a K/V computed under ``no_grad`` must never stand in for one that needs gradients).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class KVCache:
    """Per-layer self-attention K/V plus an optional cross-attention (text) K/V cache.

    Attributes:
        keys: per layer ``[B, capacity_frames * tokens_per_frame, heads, head_dim]`` un-rotated keys.
        values: per layer, same shape, values.
        tokens_per_frame: tokens of one latent frame after patching.
        capacity_frames: frames the buffers hold.
        window_frames: attended frames per chunk (sink included), ``-1`` = all stored frames.
        sink_frames: frames at the front kept as attention sink (``0`` = none).
        sink_ema_alpha: EMA weight of the old sink on an eviction of exactly ``sink_frames`` frames.
        rolling: allow eviction; a non-rolling cache raises on overflow.
        length_frames: valid frames in the buffers.
        frames_written: frames appended since creation (stream position of the next chunk).
        cross_keys: per layer text keys ``[B, L, heads, head_dim]`` or None (filled only without grad).
        cross_values: per layer text values, same.
        cross_source: the text embedding tensor the cross cache was computed from (held, so its identity
            cannot be taken over by a new tensor; the cache is valid only for that very tensor).
    """

    keys: list[Tensor]
    values: list[Tensor]
    tokens_per_frame: int
    capacity_frames: int
    window_frames: int = -1
    sink_frames: int = 0
    sink_ema_alpha: float = 0.999
    rolling: bool = False
    length_frames: int = 0
    frames_written: int = 0
    cross_keys: list[Tensor | None] = field(default_factory=list)
    cross_values: list[Tensor | None] = field(default_factory=list)
    cross_source: Tensor | None = None
    _cross_version: int | None = field(default=None, init=False, repr=False)

    @classmethod
    def allocate(
        cls,
        *,
        num_layers: int,
        batch_size: int,
        capacity_frames: int,
        tokens_per_frame: int,
        heads: int,
        head_dim: int,
        window_frames: int = -1,
        sink_frames: int = 0,
        sink_ema_alpha: float = 0.999,
        rolling: bool = False,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> KVCache:
        """Preallocate zeroed buffers (one K and one V per layer).

        Raises:
            ValueError: inconsistent geometry (non-positive sizes, sink >= window, rolling without room).
        """
        for name, val in (
            ("num_layers", num_layers),
            ("batch_size", batch_size),
            ("capacity_frames", capacity_frames),
            ("tokens_per_frame", tokens_per_frame),
            ("heads", heads),
            ("head_dim", head_dim),
        ):
            if val < 1:
                raise ValueError(f"KVCache {name}={val} must be >= 1")
        if window_frames != -1 and not 0 <= sink_frames < window_frames:
            raise ValueError(
                f"KVCache sink_frames={sink_frames} must be in [0, window_frames={window_frames}); "
                "lower the sink or widen the window"
            )
        if window_frames == -1 and sink_frames:
            raise ValueError(f"KVCache sink_frames={sink_frames} needs a local window (window_frames != -1)")
        if rolling and capacity_frames <= sink_frames:
            raise ValueError(f"rolling KVCache capacity_frames={capacity_frames} must exceed sink_frames={sink_frames}")
        if not 0.0 <= sink_ema_alpha <= 1.0:
            raise ValueError(f"KVCache sink_ema_alpha={sink_ema_alpha} must be in [0, 1]")
        shape = (batch_size, capacity_frames * tokens_per_frame, heads, head_dim)
        return cls(
            keys=[torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)],
            values=[torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)],
            tokens_per_frame=tokens_per_frame,
            capacity_frames=capacity_frames,
            window_frames=window_frames,
            sink_frames=sink_frames,
            sink_ema_alpha=sink_ema_alpha,
            rolling=rolling,
            cross_keys=[None] * num_layers,
            cross_values=[None] * num_layers,
        )

    # ------------------------------------------------------------------ geometry
    @property
    def num_layers(self) -> int:
        """Number of transformer layers the cache serves."""
        return len(self.keys)

    def nbytes(self) -> int:
        """Bytes held by the self-attention buffers (constant for the cache's lifetime)."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def eviction_frames(self, num_new_frames: int) -> int:
        """Frames an append of ``num_new_frames`` would evict (0 when it fits).

        Raises:
            ValueError: overflow of a non-rolling cache, or a chunk too large for the rolling window.
        """
        if num_new_frames < 1:
            raise ValueError(f"num_new_frames={num_new_frames} must be >= 1")
        evict = max(0, self.length_frames + num_new_frames - self.capacity_frames)
        if evict and not self.rolling:
            raise ValueError(
                f"full KV cache overflow: {self.length_frames} stored + {num_new_frames} new frames > capacity "
                f"{self.capacity_frames}; allocate max_frames >= the stream length or use rolling=True"
            )
        if evict > max(0, self.length_frames - self.sink_frames):
            raise ValueError(
                f"chunk of {num_new_frames} frames cannot fit a rolling cache of {self.capacity_frames} frames "
                f"with a {self.sink_frames}-frame sink; use smaller chunks or a larger local window"
            )
        return evict

    def attended_frames(self, num_new_frames: int) -> int:
        """Number of key frames a chunk of ``num_new_frames`` attends to (its own frames included)."""
        n = self.length_frames - self.eviction_frames(num_new_frames) + num_new_frames
        if self.window_frames == -1 or n <= self.window_frames:
            return n
        return self.window_frames

    # ------------------------------------------------------------------ read (pure)
    def _sink_after_eviction(self, layer: int, evict: int) -> tuple[Tensor, Tensor]:
        """Sink K/V ``[B, sink*tpf, H, D]`` as the pending eviction would leave them (no mutation)."""
        tpf, s = self.tokens_per_frame, self.sink_frames
        k, v = self.keys[layer], self.values[layer]
        sink_k, sink_v = k[:, : s * tpf], v[:, : s * tpf]
        ev_k, ev_v = k[:, s * tpf : (s + evict) * tpf], v[:, s * tpf : (s + evict) * tpf]
        if evict == s:
            a = self.sink_ema_alpha
            # EMA in fp32 so alpha=0.999 is not rounded away in bf16 caches (§2.4).
            new_k = (a * sink_k.float() + (1.0 - a) * ev_k.float()).to(k.dtype)
            new_v = (a * sink_v.float() + (1.0 - a) * ev_v.float()).to(v.dtype)
            return new_k, new_v
        m = min(evict, s) * tpf
        return torch.cat([ev_k[:, :m], sink_k[:, m:]], dim=1), torch.cat([ev_v[:, :m], sink_v[:, m:]], dim=1)

    def attended(self, layer: int, new_k: Tensor, new_v: Tensor) -> tuple[Tensor, Tensor]:
        """Keys/values a chunk attends to: the virtual append of ``new_k/new_v``; never mutates.

        Args:
            layer: transformer layer index.
            new_k: the chunk's un-rotated keys ``[B, f*tpf, heads, head_dim]``.
            new_v: its values, same shape.

        Returns:
            ``(k, v)`` each ``[B, attended_frames(f)*tpf, heads, head_dim]`` (sink first, chunk last).
        """
        tpf = self.tokens_per_frame
        f = self._frames_of(new_k)
        evict = self.eviction_frames(f)
        k, v = self.keys[layer], self.values[layer]
        s, L = self.sink_frames, self.length_frames
        if evict:
            sink_k, sink_v = self._sink_after_eviction(layer, evict)
            parts_k = [sink_k, k[:, (s + evict) * tpf : L * tpf], new_k]
            parts_v = [sink_v, v[:, (s + evict) * tpf : L * tpf], new_v]
        else:
            parts_k = [k[:, : L * tpf], new_k]
            parts_v = [v[:, : L * tpf], new_v]
        n = L - evict + f
        if self.window_frames != -1 and n > self.window_frames:
            # keys = S[:sink] ++ S[n - (window - sink):] (RF kv_start = max(sink, end - window + sink)).
            full_k, full_v = torch.cat(parts_k, dim=1), torch.cat(parts_v, dim=1)
            start = (n - (self.window_frames - s)) * tpf
            return (
                torch.cat([full_k[:, : s * tpf], full_k[:, start:]], dim=1),
                torch.cat([full_v[:, : s * tpf], full_v[:, start:]], dim=1),
            )
        return torch.cat(parts_k, dim=1), torch.cat(parts_v, dim=1)

    # ------------------------------------------------------------------ write (context pass only)
    @torch.no_grad()
    def store(self, layer: int, new_k: Tensor, new_v: Tensor) -> None:
        """Append one layer's K/V in place (eviction + EMA sink as in :meth:`attended`).

        Call for every layer with the same chunk, then :meth:`advance` once.
        """
        tpf = self.tokens_per_frame
        f = self._frames_of(new_k)
        evict = self.eviction_frames(f)
        k, v = self.keys[layer], self.values[layer]
        s, L = self.sink_frames, self.length_frames
        if evict:
            sink_k, sink_v = self._sink_after_eviction(layer, evict)
            rolled = slice((s + evict) * tpf, L * tpf)
            kept_k, kept_v = k[:, rolled].clone(), v[:, rolled].clone()
            k[:, : s * tpf] = sink_k
            v[:, : s * tpf] = sink_v
            k[:, s * tpf : (L - evict) * tpf] = kept_k
            v[:, s * tpf : (L - evict) * tpf] = kept_v
        start = (L - evict) * tpf
        k[:, start : start + f * tpf] = new_k.detach().to(k.dtype)
        v[:, start : start + f * tpf] = new_v.detach().to(v.dtype)

    def advance(self, num_new_frames: int) -> None:
        """Commit an append of ``num_new_frames`` to every layer (after :meth:`store` on all layers)."""
        evict = self.eviction_frames(num_new_frames)
        self.length_frames = self.length_frames - evict + num_new_frames
        self.frames_written += num_new_frames

    def reset(self) -> None:
        """Forget every stored frame and the text cache (buffers are kept for reuse)."""
        self.length_frames = 0
        self.frames_written = 0
        self.bind_text(None)

    def bind_text(self, text: Tensor | None) -> None:
        """Make the cross-attention cache belong to ``text`` (clears it unless it already does)."""
        if text is not None and self.cross_source is text and self._cross_version == text._version:
            return
        self.cross_keys = [None] * self.num_layers
        self.cross_values = [None] * self.num_layers
        self.cross_source = text
        self._cross_version = None if text is None else text._version

    def _frames_of(self, new_k: Tensor) -> int:
        if new_k.shape[1] % self.tokens_per_frame:
            raise ValueError(
                f"{new_k.shape[1]} new tokens is not a whole number of frames of {self.tokens_per_frame} tokens; "
                "the latent height/width must match the cache's latent_hw"
            )
        return new_k.shape[1] // self.tokens_per_frame
