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
* Eviction happens only in a rolling cache (``rolling=True``), when the next append would overflow
  ``capacity_frames``: the ``e`` oldest non-sink frames are dropped, the rest roll left. If
  ``e == sink_frames`` the sink becomes ``alpha * sink + (1 - alpha) * evicted`` (EMA sink, alpha = 0.999),
  otherwise the first ``min(e, sink)`` sink frames are overwritten by the evicted ones (RF
  ``causal_model.py`` rule). A rolling cache serves one chunk size (the first stored chunk's), so the
  eviction the *next* chunk needs is known when a chunk is stored: :meth:`KVCache.store` applies it right
  away, once per chunk and layer, and every read of the next chunk (its denoising steps and its context
  pass) is a plain ``stored ++ new`` with no EMA or roll to recompute. A non-rolling cache that would
  overflow raises instead (Self-Forcing's full cache cannot go past its capacity, §1.11).

Reads (:meth:`KVCache.attended`) never mutate the cache, so gradient-checkpoint replays of a denoising
step see identical K/V (docs/method.md §5 item 7). Reads without autograd (streaming, no-grad rollout
steps) use :meth:`KVCache.attended_rotated`: same keys and values, rotated once per chunk and kept in a
per-layer read buffer; it writes only the free rows after the stored frames, never a stored row. :meth:`KVCache.store` (called only by the no-grad context
pass) writes one layer, :meth:`KVCache.advance` then moves the lengths once all layers have written.
Geometry is Python ints (``length_frames``: one compiled graph per value, a handful per stream) and the
stream position ``frames_written`` enters no tensor shape, so a compiled stream of any length stops
recompiling once the window is full.

A separate cross-attention cache holds the text K/V per layer; it is filled and used only outside
autograd (a K/V computed under ``no_grad`` must never stand in for one that needs gradients).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from stream_r1.models.condition_memo import ConditionMemo
from stream_r1.models.rope import Rope, apply_rope


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
        length_frames: valid frames in the buffers (in a rolling cache: after the eviction the next chunk needs).
        frames_written: frames appended since creation (stream position of the next chunk).
        chunk_frames: frames of every chunk a rolling cache has stored (0 before the first).
        cross_keys: per layer text keys ``[B, L, heads, head_dim]`` or None (filled only without grad).
        cross_values: per layer text values, same.
        cross_source: the text embedding tensor the cross cache was computed from (held, so its identity
            cannot be taken over by a new tensor; the cache is valid only for that very tensor).
        conditions: the stream's memo of the transformer's time/text conditioning, or None (the default:
            computed on every forward). Only a caller whose weights stay fixed for the cache's whole life
            attaches one (streaming generation; see :mod:`stream_r1.models.condition_memo`).
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
    chunk_frames: int = 0
    cross_keys: list[Tensor | None] = field(default_factory=list)
    cross_values: list[Tensor | None] = field(default_factory=list)
    cross_source: Tensor | None = None
    conditions: ConditionMemo | None = None
    _cross_version: int | None = field(default=None, init=False, repr=False)
    _writes: int = field(default=0, init=False, repr=False)
    _rotated: dict[int, _RotatedKeys] = field(default_factory=dict, init=False, repr=False)

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

    def _check_chunk(self, num_new_frames: int) -> None:
        if num_new_frames < 1:
            raise ValueError(f"num_new_frames={num_new_frames} must be >= 1")
        if self.rolling and self.chunk_frames and num_new_frames != self.chunk_frames:
            raise ValueError(
                f"this rolling KV cache streams chunks of {self.chunk_frames} frames, got {num_new_frames}; "
                "use one chunk size per stream (or reset the cache)"
            )

    def eviction_frames(self, num_new_frames: int) -> int:
        """Frames that must go before ``num_new_frames`` more fit behind the stored ones (0 when they fit).

        Raises:
            ValueError: overflow of a non-rolling cache, or a chunk too large for the rolling window.
        """
        self._check_chunk(num_new_frames)
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
        """Number of key frames a chunk of ``num_new_frames`` attends to (its own frames included).

        Raises:
            ValueError: the chunk does not fit (see :meth:`eviction_frames`; a rolling cache has already
                evicted for its chunk size, so this only fails for a wrong chunk size or a first chunk
                larger than the window).
        """
        if self.eviction_frames(num_new_frames):
            raise ValueError(
                f"chunk of {num_new_frames} frames cannot fit a KV cache of {self.capacity_frames} frames "
                f"holding {self.length_frames}; use smaller chunks or a larger local window"
            )
        n = self.length_frames + num_new_frames
        if self.window_frames == -1 or n <= self.window_frames:
            return n
        return self.window_frames

    # ------------------------------------------------------------------ read (pure)
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
        self.attended_frames(f)  # validates the chunk
        n = self.length_frames + f
        k, v = self.keys[layer], self.values[layer]
        s, L = self.sink_frames, self.length_frames
        if self.window_frames != -1 and n > self.window_frames:
            # keys = S[:sink] ++ S[n - (window - sink):] (RF kv_start = max(sink, end - window + sink)).
            start = (n - (self.window_frames - s)) * tpf
            return (
                torch.cat([k[:, : s * tpf], k[:, start : L * tpf], new_k], dim=1),
                torch.cat([v[:, : s * tpf], v[:, start : L * tpf], new_v], dim=1),
            )
        return torch.cat([k[:, : L * tpf], new_k], dim=1), torch.cat([v[:, : L * tpf], new_v], dim=1)

    @torch.no_grad()
    def attended_rotated(self, layer: int, new_k: Tensor, new_v: Tensor, rope: Rope) -> tuple[Tensor, Tensor]:
        """:meth:`attended` with the keys rotated by ``rope``, for reads without autograd (streaming).

        Equal to ``apply_rope(k, rope), v`` of ``k, v = attended(layer, new_k, new_v)``, with less work per
        read: a chunk's denoising steps and its context pass read the same cached rows at the same
        positions, so their rotated keys are computed once (first read of the layer after the cache
        changed) into a per-layer buffer, and each read only rotates the chunk's own keys into its tail.
        Values need no rotation: when the attended rows are the stored ones in order (always in a rolling
        cache) the chunk's values are written into the free rows right after them, which no read or
        eviction looks at (the chunk's context pass stores its own there), and a view is returned; with a
        window cut out of a longer cache they are gathered into a buffer. No ``torch.cat`` per read.

        The returned tensors are scratch space of the cache: valid until the next read or write of the
        same layer. Not for reads under autograd (a later read would overwrite what backward needs):
        use :meth:`attended` there.

        Args:
            layer: transformer layer index.
            new_k: the chunk's un-rotated keys ``[B, f*tpf, heads, head_dim]``.
            new_v: its values, same shape.
            rope: rotation of the ``attended_frames(f) * tpf`` attended keys (positions ``0 .. n-1``).

        Returns:
            ``(k, v)`` each ``[B, attended_frames(f)*tpf, heads, head_dim]``, ``k`` rotated.
        """
        k, v = self.keys[layer], self.values[layer]
        if new_k.dtype != k.dtype or new_v.dtype != v.dtype:
            keys, values = self.attended(layer, new_k, new_v)
            return apply_rope(keys, rope), values
        tpf = self.tokens_per_frame
        f = self._frames_of(new_k)
        n = self.attended_frames(f)  # validates the chunk
        s, L = self.sink_frames, self.length_frames
        cut = self.window_frames != -1 and L + f > self.window_frames
        # Stored rows the chunk attends to, in attended order (sink, then the most recent frames).
        pieces = [(0, s * tpf), ((L + f - (self.window_frames - s)) * tpf, L * tpf)] if cut else [(0, L * tpf)]
        cached = (n - f) * tpf
        state = self._rotated.get(layer)
        valid = (self._writes, k._version, L, f, n)
        if state is None or state.keys.dtype != k.dtype:
            # At most the window is attended: the buffer holds that many frames, not the whole capacity.
            frames = self.capacity_frames if self.window_frames == -1 else min(self.window_frames, self.capacity_frames)
            state = self._rotated[layer] = _RotatedKeys(k.new_empty((k.shape[0], frames * tpf, *k.shape[2:])))
        if state.valid != valid or state.rope is not rope:
            at = 0
            for start, end in pieces:
                apply_rope(k[:, start:end], rope.rows(at, at + end - start), out=state.keys[:, at : at + end - start])
                if cut:
                    if state.values is None:
                        state.values = torch.empty_like(state.keys)
                    state.values[:, at : at + end - start] = v[:, start:end]
                at += end - start
            state.valid, state.rope = valid, rope
        keys = state.keys[:, : n * tpf]
        apply_rope(new_k, rope.rows(cached, n * tpf), out=keys[:, cached:])
        if cut:
            values = state.values[:, : n * tpf]
            values[:, cached:] = new_v
        else:
            v[:, L * tpf : (L + f) * tpf] = new_v
            values = v[:, : n * tpf]
        return keys, values

    # ------------------------------------------------------------------ write (context pass only)
    @torch.no_grad()
    def store(self, layer: int, new_k: Tensor, new_v: Tensor) -> None:
        """Append one layer's K/V in place, then (rolling) evict what the next chunk of this size needs.

        Call for every layer with the same chunk, then :meth:`advance` once.
        """
        tpf = self.tokens_per_frame
        f = self._frames_of(new_k)
        self.attended_frames(f)  # validates the chunk
        self._writes += 1
        k, v = self.keys[layer], self.values[layer]
        L = self.length_frames
        k[:, L * tpf : (L + f) * tpf] = new_k.detach().to(k.dtype)
        v[:, L * tpf : (L + f) * tpf] = new_v.detach().to(v.dtype)
        evict = self._next_eviction(L + f, f)
        if evict:
            self._evict(k, L + f, evict)
            self._evict(v, L + f, evict)

    def _next_eviction(self, stored: int, f: int) -> int:
        """Frames to evict after storing up to ``stored`` frames so that a next chunk of ``f`` fits."""
        if not self.rolling:
            return 0
        evict = max(0, stored + f - self.capacity_frames)
        if evict > max(0, stored - self.sink_frames):
            raise ValueError(
                f"chunk of {f} frames cannot fit a rolling cache of {self.capacity_frames} frames "
                f"with a {self.sink_frames}-frame sink; use smaller chunks or a larger local window"
            )
        return evict

    def _evict(self, buf: Tensor, stored: int, evict: int) -> None:
        """Drop ``evict`` frames after the sink of ``buf`` (``stored`` valid frames); EMA or overwrite the sink."""
        tpf, s = self.tokens_per_frame, self.sink_frames
        sink = buf[:, : s * tpf]
        evicted = buf[:, s * tpf : (s + evict) * tpf]
        if evict == s:
            # EMA in fp32 so alpha=0.999 is not rounded away in bf16 caches (§2.4).
            a = self.sink_ema_alpha
            sink.copy_((a * sink.float() + (1.0 - a) * evicted.float()).to(buf.dtype))
        else:
            m = min(evict, s) * tpf
            sink[:, :m] = evicted[:, :m]
        kept = buf[:, (s + evict) * tpf : stored * tpf].clone()
        buf[:, s * tpf : (stored - evict) * tpf] = kept

    def advance(self, num_new_frames: int) -> None:
        """Commit an append of ``num_new_frames`` to every layer (after :meth:`store` on all layers)."""
        stored = self.length_frames + num_new_frames
        self._writes += 1
        self.length_frames = stored - self._next_eviction(stored, num_new_frames)
        self.frames_written += num_new_frames
        if self.rolling:
            self.chunk_frames = num_new_frames

    def reset(self) -> None:
        """Forget every stored frame, the text cache and the conditioning memo (buffers are kept for reuse)."""
        if self.conditions is not None:
            self.conditions.clear()
        self.length_frames = 0
        self.frames_written = 0
        self.chunk_frames = 0
        self._writes += 1
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


@dataclass
class _RotatedKeys:
    """Read buffer of one layer for :meth:`KVCache.attended_rotated`.

    Attributes:
        keys: ``[B, window_tokens, heads, head_dim]``; rows ``0 .. cached-1`` hold the attended stored
            keys rotated, the rows after them the current read's rotated chunk keys.
        values: same shape, the gathered values when the window is cut out of a longer cache (else None).
        valid: cache state the rotated rows were computed for (writes, key-buffer version, length, chunk,
            attended frames).
        rope: the rotation they were computed with (held, so its identity cannot be taken over).
    """

    keys: Tensor
    values: Tensor | None = None
    valid: tuple[int, ...] | None = None
    rope: Rope | None = None
