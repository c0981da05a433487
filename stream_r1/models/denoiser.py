"""x0 denoiser wrappers in the library layout ``[B, F, C, H, W]`` (docs/method.md §1.1, §1.2, §1.3, §5 items 3, 7, 8).

The transformers predict the flow ``v ~= eps - x0``; the wrappers return ``x0 = x_t - sigma v`` with the
table-quantised sigma of their own shift (``stream_r1.diffusion.x0_from_flow``, float64), while the float
``t`` itself goes into the time embedding. diffusers' ``[B, C, F, H, W]`` appears only inside this module.

* :class:`CausalDenoiser` wraps the student (:class:`CausalWanTransformer`): per-frame ``t [B, f]``, a
  read-only cached path (``predict_x0``), the only cache writer (``write_context``, no grad, ``t =
  context_noise``), and the block-masked full-sequence path (``forward_full``).
* :class:`BidirectionalDenoiser` wraps a stock ``WanTransformer3DModel`` (teacher, critic): one ``t`` per
  sample.
"""

from __future__ import annotations

import torch
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
from torch import Tensor

from stream_r1.diffusion import flow_from_x0, x0_from_flow, x0_from_flow_sigma
from stream_r1.models.causal_attention import AttentionBackend
from stream_r1.models.causal_wan import CausalWanTransformer
from stream_r1.models.kv_cache import KVCache


def to_diffusers_layout(x: Tensor) -> Tensor:
    """``[B, F, C, H, W]`` -> ``[B, C, F, H, W]``."""
    return x.permute(0, 2, 1, 3, 4)


def to_library_layout(x: Tensor) -> Tensor:
    """``[B, C, F, H, W]`` -> ``[B, F, C, H, W]``."""
    return x.permute(0, 2, 1, 3, 4)


def _check_latent(name: str, x: Tensor, channels: int) -> None:
    if x.dim() != 5 or x.shape[2] != channels:
        raise ValueError(f"{name} must be [B, F, C={channels}, H, W] (library layout), got {tuple(x.shape)}")


def _param_dtype(model: torch.nn.Module) -> torch.dtype:
    return model.patch_embedding.weight.dtype


class CausalDenoiser:
    """The student as an x0 predictor with block-causal attention and a KV cache.

    Args:
        transformer: the causal student.
        shift: sigma-table shift of the student (``rollout.student_sigma_shift``, 5.0).
        frames_per_block: latent frames per chunk (3).
        local_attn_frames: attended frames per chunk incl. sink (9 for RF/Stream-R1), -1 = all.
        sink_frames: attention-sink frames (3 for RF/Stream-R1, 0 without a window).
        sink_ema_alpha: EMA-sink weight on eviction (0.999).
        attention_backend: self-attention backend of every call (``"sdpa"`` -> diffusers' native, ``"flex"``,
            ``"flash"`` with its masked forwards on flex, or a diffusers backend name).
    """

    def __init__(
        self,
        transformer: CausalWanTransformer,
        *,
        shift: float = 5.0,
        frames_per_block: int = 3,
        local_attn_frames: int = -1,
        sink_frames: int = 0,
        sink_ema_alpha: float = 0.999,
        attention_backend: AttentionBackend = "sdpa",
    ) -> None:
        if not isinstance(transformer, CausalWanTransformer):
            raise TypeError(
                f"CausalDenoiser needs a CausalWanTransformer, got {type(transformer).__name__}; "
                "load the student with load_wan_transformer(path, causal=True)"
            )
        if frames_per_block < 1:
            raise ValueError(f"frames_per_block={frames_per_block} must be >= 1")
        if local_attn_frames != -1 and local_attn_frames < frames_per_block:
            raise ValueError(f"local_attn_frames={local_attn_frames} must be -1 or >= frames_per_block")
        if local_attn_frames == -1 and sink_frames:
            raise ValueError(f"sink_frames={sink_frames} needs a local window (local_attn_frames != -1)")
        self.transformer = transformer
        self.shift = float(shift)
        self.frames_per_block = frames_per_block
        self.local_attn_frames = local_attn_frames
        self.sink_frames = sink_frames
        self.sink_ema_alpha = sink_ema_alpha
        self.attention_backend = attention_backend

    @property
    def in_channels(self) -> int:
        """Latent channels (16 for Wan2.1)."""
        return int(self.transformer.config.in_channels)

    def new_cache(
        self,
        batch_size: int,
        max_frames: int,
        latent_hw: tuple[int, int],
        *,
        rolling: bool,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> KVCache:
        """Preallocate a KV cache for a stream.

        ``rolling=False``: capacity ``max_frames`` (training rollouts: never evicts, no EMA; the attended
        window is still ``local_attn_frames`` with relative RoPE). ``rolling=True``: capacity
        ``local_attn_frames`` (inference streaming of any length with EMA-sink eviction, §2.4).

        Raises:
            ValueError: ``rolling`` without a local window, or a latent size that does not patch.
        """
        cfg = self.transformer.config
        _, p_h, p_w = cfg.patch_size
        h, w = latent_hw
        if h % p_h or w % p_w:
            raise ValueError(f"latent_hw={latent_hw} must be divisible by the patch size {p_h}x{p_w}")
        if rolling and self.local_attn_frames == -1:
            raise ValueError("rolling=True needs local_attn_frames != -1 (e.g. model.local_attn_frames=9)")
        if max_frames < 1:
            raise ValueError(f"max_frames={max_frames} must be >= 1")
        return KVCache.allocate(
            num_layers=int(cfg.num_layers),
            batch_size=batch_size,
            capacity_frames=self.local_attn_frames if rolling else max_frames,
            tokens_per_frame=(h // p_h) * (w // p_w),
            heads=int(cfg.num_attention_heads),
            head_dim=int(cfg.attention_head_dim),
            window_frames=self.local_attn_frames,
            sink_frames=self.sink_frames,
            sink_ema_alpha=self.sink_ema_alpha,
            rolling=rolling,
            dtype=dtype,
            device=device,
        )

    def _flow(self, x_t: Tensor, t: Tensor, text_emb: Tensor, **kwargs: object) -> Tensor | None:
        """Flow in library layout (None for a context pass, whose prediction the transformer skips)."""
        _check_latent("x_t", x_t, self.in_channels)
        b, f = x_t.shape[:2]
        t = torch.as_tensor(t, device=x_t.device)
        if t.shape != (b, f):
            raise ValueError(f"t must be per-frame [B, F]=[{b}, {f}], got {tuple(t.shape)}")
        dtype = _param_dtype(self.transformer)
        out = self.transformer(
            to_diffusers_layout(x_t).to(dtype), t.float(), text_emb.to(dtype), return_dict=False, **kwargs
        )
        return None if out is None else to_library_layout(out[0])

    def predict_flow(
        self, x_t: Tensor, t: Tensor, text_emb: Tensor, cache: KVCache | None, frame_offset: int
    ) -> Tensor:
        """Flow ``v`` for one chunk ``[B, f, C, H, W]`` (reads ``cache``, never writes it)."""
        if cache is None:
            return self._flow(
                x_t,
                t,
                text_emb,
                frame_offset=frame_offset,
                frames_per_block=self.frames_per_block,
                attention_backend=self.attention_backend,
            )
        return self._flow(
            x_t, t, text_emb, frame_offset=frame_offset, kv_cache=cache, attention_backend=self.attention_backend
        )

    def predict_x0(
        self,
        x_t: Tensor,
        t: Tensor,
        text_emb: Tensor,
        cache: KVCache | None,
        frame_offset: int,
        sigma: Tensor | None = None,
    ) -> Tensor:
        """x0 prediction for a chunk at stream position ``frame_offset``.

        Args:
            x_t: noisy chunk ``[B, f, C, H, W]``.
            t: per-frame timesteps ``[B, f]`` (float, ``1000 sigma``).
            text_emb: ``[B, L, text_dim]``.
            cache: KV cache holding the previous chunks (read only), or None (block mask over the input).
            frame_offset: frame index of the chunk's first frame in the stream.
            sigma: the table sigma of ``t`` (``lookup_sigma(t, self.shift)``, float64 ``[B, f]``) when the
                caller has it already (a stream reuses its steps' sigmas for every chunk); None = look it up.

        Returns:
            ``[B, f, C, H, W]`` in the transformer's dtype; differentiable when grad is enabled.
        """
        v = self.predict_flow(x_t, t, text_emb, cache, frame_offset)
        if sigma is not None:
            return x0_from_flow_sigma(v, x_t, sigma)
        return x0_from_flow(v, x_t, torch.as_tensor(t, device=v.device), self.shift)

    @torch.no_grad()
    def write_context(
        self, x0: Tensor, text_emb: Tensor, cache: KVCache, frame_offset: int, t_context: float | Tensor = 0.0
    ) -> None:
        """The context pass (§1.3, §5 item 8): run the chunk's clean output at ``t_context`` and append its K/V.

        The only writer of ``cache``; always under ``no_grad``, so stored K/V are constants. ``t_context``
        is a float or the per-frame ``[B, f]`` tensor of it (a stream passes the same tensor every chunk,
        so a cache with a conditioning memo embeds it once per stream).
        """
        b, f = x0.shape[:2]
        t = t_context if isinstance(t_context, Tensor) else torch.full((b, f), float(t_context), device=x0.device)
        self._flow(
            x0,
            t,
            text_emb,
            frame_offset=frame_offset,
            kv_cache=cache,
            write_cache=True,
            attention_backend=self.attention_backend,
        )

    def forward_full(self, x_t: Tensor, t: Tensor, text_emb: Tensor, frame_offset: int = 0) -> Tensor:
        """x0 for a whole sequence ``[B, F, C, H, W]`` with the block-causal mask (no cache).

        Geometry: full attention (absolute RoPE), bidirectional within chunks of ``frames_per_block``,
        causal across; equals the chunk-by-chunk cached path with a full cache (``local_attn_frames=-1``).
        """
        v = self._flow(
            x_t,
            t,
            text_emb,
            frame_offset=frame_offset,
            frames_per_block=self.frames_per_block,
            attention_backend=self.attention_backend,
        )
        return x0_from_flow(v, x_t, torch.as_tensor(t, device=v.device), self.shift)

    def flow_from_x0(self, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """``v = (x_t - x0) / sigma`` with this wrapper's table (for flow-matching losses)."""
        return flow_from_x0(x0, x_t, t, self.shift)


class BidirectionalDenoiser:
    """A stock Wan transformer (teacher or critic) as an x0 predictor with one timestep per sample.

    Args:
        transformer: ``WanTransformer3DModel`` (full bidirectional attention).
        shift: sigma-table shift used for the x0 conversion (the SF wrappers' default is 8.0 for
            teacher/critic; any shift gives sigma ~= t/1000 up to table quantisation, §1.2).
    """

    def __init__(self, transformer: WanTransformer3DModel, *, shift: float = 5.0) -> None:
        if not isinstance(transformer, WanTransformer3DModel):
            raise TypeError(f"BidirectionalDenoiser needs a WanTransformer3DModel, got {type(transformer).__name__}")
        self.transformer = transformer
        self.shift = float(shift)

    @property
    def in_channels(self) -> int:
        """Latent channels (16 for Wan2.1)."""
        return int(self.transformer.config.in_channels)

    def predict_flow(self, x_t: Tensor, t: Tensor, text_emb: Tensor) -> Tensor:
        """Flow ``v`` ``[B, F, C, H, W]`` for ``x_t`` at per-sample ``t [B]``."""
        _check_latent("x_t", x_t, self.in_channels)
        t = torch.as_tensor(t, device=x_t.device)
        if t.shape != (x_t.shape[0],):
            raise ValueError(f"t must be one timestep per sample [B]=[{x_t.shape[0]}], got {tuple(t.shape)}")
        dtype = _param_dtype(self.transformer)
        v = self.transformer(to_diffusers_layout(x_t).to(dtype), t.float(), text_emb.to(dtype), return_dict=False)[0]
        return to_library_layout(v)

    def predict_x0(self, x_t: Tensor, t: Tensor, text_emb: Tensor) -> Tensor:
        """x0 ``[B, F, C, H, W]`` = ``x_t - sigma(t) v``."""
        v = self.predict_flow(x_t, t, text_emb)
        return x0_from_flow(v, x_t, torch.as_tensor(t, device=v.device), self.shift)

    def flow_from_x0(self, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """``v = (x_t - x0) / sigma`` with this wrapper's table (critic flow loss, §1.5)."""
        return flow_from_x0(x0, x_t, t, self.shift)
