"""The causal streaming student: ``CausalWanTransformer(WanTransformer3DModel)`` (docs/method.md §4.2, §4.4).

Same ``__init__``, config, parameters and state-dict keys as diffusers' ``WanTransformer3DModel`` (so
``from_pretrained`` and strict ``load_state_dict`` from a stock model work), with its own forward:

* per-frame timesteps ``[B, F]`` -> per-frame modulation ``[B, F, 6, dim]`` applied frame-wise (the
  condition embedder's 2-D timestep path with one entry per latent frame);
* RoPE with a frame offset (:class:`~stream_r1.models.rope.FrameRope`);
* attention through :class:`~stream_r1.models.causal_attention.CausalWanAttnProcessor`, in one of
  three geometries:

  1. ``frames_per_block=None``, no cache: bidirectional over the input (the stock model's geometry);
  2. ``frames_per_block=k``, no cache: full sequence with a block-causal mask (bidirectional inside
     chunks of ``k`` latent frames, causal across), dense boolean SDPA mask (runs backward on CPU) or a
     flex ``BlockMask`` with ``attention_backend="flex"`` (GPU);
  3. ``kv_cache`` given: one chunk at stream position ``frame_offset`` attends to the cache's view
     (see :mod:`stream_r1.models.kv_cache` for exactly which K/V); ``write_cache=True`` (no grad only)
     also stores the chunk's K/V.

Cross-attention attends all text tokens without a mask. Inputs are diffusers layout ``[B, C, F, H, W]``;
the library layout ``[B, F, C, H, W]`` is converted in :mod:`stream_r1.models.denoiser`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel, WanTransformerBlock
from diffusers.utils import apply_lora_scale
from torch import Tensor, nn

from stream_r1.models.block_mask import dense_block_causal_mask, flex_block_causal_mask
from stream_r1.models.causal_attention import (
    AttentionBackendName,
    CausalWanAttnProcessor,
    SelfAttentionInputs,
    check_flash_available,
    resolve_backend,
)
from stream_r1.models.kv_cache import KVCache
from stream_r1.models.rope import FrameRope

_ONES: dict[tuple[int, torch.device], Tensor] = {}


def _layer_norm(norm: nn.Module, x: Tensor) -> Tensor:
    """``norm(x)`` for the blocks' and the head's weightless ``FP32LayerNorm`` (``x`` fp32 ``[..., dim]``).

    Without autograd (eager) it passes an all-ones fp32 weight: scaling by 1.0 is exact, so the result is bit
    for bit the weightless one, and torch's CPU layer-norm kernel is faster with a weight than without
    (30 vs 48 us for ``[1, 1170, 32]`` on one thread; docs/benchmarks.md, "Streaming speed-up"). With
    autograd or under ``torch.compile`` it is ``norm(x)`` itself.
    """
    if norm.weight is not None or torch.is_grad_enabled() or torch.compiler.is_compiling():
        return norm(x)
    (dim,) = norm.normalized_shape
    key = (dim, x.device)
    ones = _ONES.get(key)
    if ones is None:
        with torch.inference_mode(False):  # a plain tensor, usable in and out of inference mode
            ones = _ONES[key] = torch.ones(dim, device=x.device)
    return F.layer_norm(x.float(), norm.normalized_shape, ones, None, norm.eps)


def _frame_modulate(x: Tensor, scale: Tensor, shift: Tensor, num_frames: int) -> Tensor:
    """``x * (1 + scale) + shift`` with per-frame ``[B, F, 1, D]`` modulation on ``[B, F*T, D]`` tokens."""
    b, n, d = x.shape
    return (x.view(b, num_frames, n // num_frames, d) * (1 + scale) + shift).view(b, n, d)


def _frame_gate(x: Tensor, y: Tensor, gate: Tensor, num_frames: int) -> Tensor:
    """``x + y * gate`` with a per-frame ``[B, F, 1, D]`` gate (fp32 like the stock block)."""
    b, n, d = x.shape
    t = n // num_frames
    return (x.float().view(b, num_frames, t, d) + y.float().view(b, num_frames, t, d) * gate).view(b, n, d)


class CausalWanTransformerBlock(WanTransformerBlock):
    """``WanTransformerBlock`` (same modules and keys) whose forward applies per-frame modulation and
    routes attention through the causal processor.

    The transformer calls each block as a module (``block(...)``), so FSDP / activation-checkpoint
    wrappers hooked on the block see every call.
    """

    def forward(  # type: ignore[override]
        self,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor,
        modulation: Tensor,
        inputs: SelfAttentionInputs,
        layer_idx: int = 0,
        cross_cache: KVCache | None = None,
        kv_only: bool = False,
    ) -> Tensor:
        """One Wan block (same math as the stock forward, modulation per latent frame).

        Args:
            hidden_states: ``[B, F*T, dim]`` tokens (frame-major).
            encoder_hidden_states: projected text ``[B, L, dim]``.
            modulation: ``[B, F, 6, dim]`` time projection per latent frame.
            inputs: self-attention inputs (RoPE, mask, cache).
            layer_idx: block index (cache layer).
            cross_cache: cache holding text K/V (used only without grad), or None.
            kv_only: the last block of a context pass: store its self-attention K/V and stop (nothing reads
                its output); returns ``hidden_states`` unchanged.

        Returns:
            ``[B, F*T, dim]`` in ``hidden_states.dtype``.
        """
        num_frames = modulation.shape[1]
        mods = (self.scale_shift_table.unsqueeze(0) + modulation.float()).chunk(6, dim=2)
        shift_msa, scale_msa, gate_msa, c_shift, c_scale, c_gate = mods  # each [B, F, 1, dim]
        dtype = hidden_states.dtype

        normed = _frame_modulate(_layer_norm(self.norm1, hidden_states.float()), scale_msa, shift_msa, num_frames).to(dtype)
        if kv_only:
            self.attn1(normed, None, None, None, inputs=inputs, layer_idx=layer_idx, kv_only=True)
            return hidden_states
        attn_out = self.attn1(normed, None, None, None, inputs=inputs, layer_idx=layer_idx)
        hidden_states = _frame_gate(hidden_states, attn_out, gate_msa, num_frames).to(dtype)

        normed = self.norm2(hidden_states.float()).to(dtype)
        cross = self.attn2(normed, encoder_hidden_states, None, None, layer_idx=layer_idx, cross_cache=cross_cache)
        hidden_states = hidden_states + cross

        normed = _frame_modulate(_layer_norm(self.norm3, hidden_states.float()), c_scale, c_shift, num_frames).to(dtype)
        ff_out = self.ffn(normed)
        return _frame_gate(hidden_states, ff_out, c_gate, num_frames).to(dtype)


class CausalWanTransformer(WanTransformer3DModel):
    """Block-causal Wan2.1 transformer with per-frame timesteps and a KV cache (the Stream-R1 student).

    Construct exactly like ``WanTransformer3DModel`` (same arguments, config and weights).
    """

    _no_split_modules = ["WanTransformerBlock", "CausalWanTransformerBlock"]
    _repeated_blocks = ["WanTransformerBlock", "CausalWanTransformerBlock"]

    def __init__(
        self,
        patch_size: tuple[int, ...] = (1, 2, 2),
        num_attention_heads: int = 40,
        attention_head_dim: int = 128,
        in_channels: int = 16,
        out_channels: int = 16,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 13824,
        num_layers: int = 40,
        cross_attn_norm: bool = True,
        qk_norm: str | None = "rms_norm_across_heads",
        eps: float = 1e-6,
        image_dim: int | None = None,
        added_kv_proj_dim: int | None = None,
        rope_max_seq_len: int = 1024,
        pos_embed_seq_len: int | None = None,
    ) -> None:
        super().__init__(
            patch_size=patch_size,
            num_attention_heads=num_attention_heads,
            attention_head_dim=attention_head_dim,
            in_channels=in_channels,
            out_channels=out_channels,
            text_dim=text_dim,
            freq_dim=freq_dim,
            ffn_dim=ffn_dim,
            num_layers=num_layers,
            cross_attn_norm=cross_attn_norm,
            qk_norm=qk_norm,
            eps=eps,
            image_dim=image_dim,
            added_kv_proj_dim=added_kv_proj_dim,
            rope_max_seq_len=rope_max_seq_len,
            pos_embed_seq_len=pos_embed_seq_len,
        )
        # Same constructor arguments as the stock blocks -> identical parameters and state-dict keys.
        self.blocks = nn.ModuleList(
            [
                CausalWanTransformerBlock(
                    num_attention_heads * attention_head_dim,
                    ffn_dim,
                    num_attention_heads,
                    qk_norm,
                    cross_attn_norm,
                    eps,
                    added_kv_proj_dim,
                )
                for _ in range(num_layers)
            ]
        )
        self.frame_rope = FrameRope(attention_head_dim, rope_max_seq_len)
        # One processor per attention module, as the stock model has (set_attention_backend sets each).
        self.set_attn_processor({name: CausalWanAttnProcessor() for name in self.attn_processors})

    def _check_inputs(self, hidden_states: Tensor, timestep: Tensor, text: Tensor) -> Tensor:
        """Validate shapes and return per-frame timesteps ``[B, F]`` (float)."""
        if hidden_states.dim() != 5:
            raise ValueError(f"hidden_states must be [B, C, F, H, W], got shape {tuple(hidden_states.shape)}")
        b, c, f, h, w = hidden_states.shape
        p_t, p_h, p_w = self.config.patch_size
        if p_t != 1:
            raise ValueError(f"CausalWanTransformer needs temporal patch 1 (Wan2.1), config has {p_t}")
        if c != self.config.in_channels or h % p_h or w % p_w:
            raise ValueError(
                f"latent [B={b}, C={c}, F={f}, H={h}, W={w}] does not fit in_channels={self.config.in_channels} "
                f"and patch {p_h}x{p_w}"
            )
        if text.dim() != 3 or text.shape[0] != b or text.shape[2] != self.config.text_dim:
            raise ValueError(f"text embedding must be [B={b}, L, {self.config.text_dim}], got {tuple(text.shape)}")
        t = torch.as_tensor(timestep, device=hidden_states.device)
        if t.dim() == 0:
            t = t.expand(b)
        if t.dim() == 1:
            if t.shape[0] != b:
                raise ValueError(f"timestep [B] must have B={b} entries, got {tuple(t.shape)}")
            t = t.view(b, 1).expand(b, f)
        if t.shape != (b, f):
            raise ValueError(f"timestep must be [B] or per-frame [B, F]=[{b}, {f}], got {tuple(t.shape)}")
        return t.float()

    def enable_cache(self, config: Any) -> None:
        """Refuse diffusers' step caches (FirstBlockCache, MagCache, SeaCache, TaylorSeer, PAB, FasterCache, ...).

        Each of them skips blocks or attention calls on steps it judges redundant. A skipped block stores
        no K/V, so a skipped context pass (``write_cache=True``) would silently leave stale rows in the
        KV cache that every later chunk attends to; the student is distilled to 4 steps, which leaves
        nothing to skip safely anyway.

        Raises:
            ValueError: always, naming the config.
        """
        raise ValueError(
            f"CausalWanTransformer does not support {type(config).__name__}: block/step caches skip blocks, and a "
            "skipped block writes no K/V into the streaming KV cache (use the KV cache, which is exact)"
        )

    def _refuse_skip_hooks(self) -> None:
        """Refuse diffusers step-cache hooks attached directly (``apply_first_block_cache(model, ...)`` etc.)."""
        for block in self.blocks:
            registry = getattr(block, "_diffusers_hook", None)
            if registry is None:
                continue
            skipping = [name for name in registry.hooks if any(key in name for key in _SKIPPING_HOOKS)]
            if skipping:
                raise ValueError(
                    f"block hook {skipping[0]!r} skips blocks, and a skipped block writes no K/V into the streaming "
                    "KV cache; remove it (CausalWanTransformer supports no block/step caches)"
                )

    @apply_lora_scale("attention_kwargs")
    def forward(  # type: ignore[override]
        self,
        hidden_states: Tensor,
        timestep: Tensor,
        encoder_hidden_states: Tensor,
        encoder_hidden_states_image: Tensor | None = None,
        return_dict: bool = True,
        attention_kwargs: dict | None = None,
        *,
        frame_offset: int = 0,
        frames_per_block: int | None = None,
        kv_cache: KVCache | None = None,
        write_cache: bool = False,
        attention_backend: str | None = None,
    ) -> Tensor | tuple[Tensor] | Transformer2DModelOutput:
        """Predict the flow ``v`` for latent frames at stream position ``frame_offset``.

        Args:
            hidden_states: noisy latents ``[B, C, F, H, W]`` (diffusers layout).
            timestep: ``[B]`` or per-frame ``[B, F]`` float timesteps (``t = 1000 sigma``).
            encoder_hidden_states: text embeddings ``[B, L, text_dim]`` (all L tokens attended).
            encoder_hidden_states_image: must be None (text-to-video only).
            return_dict: return a ``Transformer2DModelOutput`` (else a 1-tuple).
            attention_kwargs: as on the stock model: ``{"scale": s}`` scales the LoRA layers for this call
                (diffusers' ``apply_lora_scale``, effective with the PEFT backend); other keys are ignored,
                as the stock Wan forward ignores them.
            frame_offset: absolute frame position of the first input frame (RoPE offset; with a cache it
                must equal ``kv_cache.frames_written``).
            frames_per_block: chunk size for the block-causal mask (no cache); None = bidirectional.
            kv_cache: cache for chunk-by-chunk streaming (read; also written if ``write_cache``).
            write_cache: the context pass: store this chunk's K/V (call under ``torch.no_grad()``). Nothing
                reads a context pass's prediction, so the work that only feeds it (the last block past its
                K/V projections, the output head) is skipped and the call returns None.
            attention_backend: self-attention backend for this call, overriding ``set_attention_backend``:
                a project name (``"sdpa"`` -> native, ``"flex"``, ``"flash"`` — flash-attn for unmasked
                attention on CUDA, its masked forwards on flex) or any diffusers backend name; None = the
                processors' backend.

        Returns:
            Flow prediction ``[B, C_out, F, H, W]`` (None with ``write_cache``).
        """
        if encoder_hidden_states_image is not None:
            raise ValueError("CausalWanTransformer is text-to-video only: encoder_hidden_states_image must be None")
        if write_cache and kv_cache is None:
            raise ValueError("write_cache=True needs a kv_cache")
        if write_cache and torch.is_grad_enabled():
            raise RuntimeError("KV cache writes must run under torch.no_grad() (the context pass)")
        backend = resolve_backend(attention_backend)
        if attention_backend == "flash":
            check_flash_available(hidden_states.device)
        self._refuse_skip_hooks()
        t = self._check_inputs(hidden_states, timestep, encoder_hidden_states)
        b, _, f, h, w = hidden_states.shape
        p_t, p_h, p_w = self.config.patch_size
        hp, wp = h // p_h, w // p_w
        device = hidden_states.device

        inputs = self._attention_inputs(f, hp, wp, frame_offset, frames_per_block, kv_cache, write_cache, device)
        inputs.backend = backend
        if attention_backend == "flash":
            inputs.masked_backend = AttentionBackendName.FLEX  # flash-attn has no block masks
        cross_cache = None
        if kv_cache is not None and not torch.is_grad_enabled():
            # Text K/V are reused only for this very tensor. Under torch.compile the binding (a tensor
            # version check dynamo cannot trace) is the caller's: stream_chunks binds before its stream.
            if not torch.compiler.is_compiling():
                kv_cache.bind_text(encoder_hidden_states)
            cross_cache = kv_cache

        x = self.patch_embedding(hidden_states).flatten(2).transpose(1, 2).contiguous()  # [B, F*T, dim]
        temb, proj, text = self._conditioning(t, encoder_hidden_states, kv_cache)

        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                # diffusers' checkpoint function (non-reentrant by default, or the one the trainer passed to
                # enable_gradient_checkpointing); replays only read the cache, so recomputation is exact.
                x = self._gradient_checkpointing_func(block, x, text, proj, inputs, i, cross_cache)
            else:
                x = block(x, text, proj, inputs, i, cross_cache, write_cache and i == last)
        if write_cache:
            kv_cache.advance(f)
            return None

        shift, scale = (self.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)  # [B, F, 1, dim]
        x = _frame_modulate(_layer_norm(self.norm_out, x.float()), scale, shift, f).type_as(x)
        x = self.proj_out(x)
        x = x.reshape(b, f, hp, wp, p_t, p_h, p_w, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        out = x.flatten(6, 7).flatten(4, 5).flatten(2, 3)
        if not return_dict:
            return (out,)
        return Transformer2DModelOutput(sample=out)

    def _conditioning(self, t: Tensor, text: Tensor, kv_cache: KVCache | None) -> tuple[Tensor, Tensor, Tensor]:
        """Time embedding ``[B, F, dim]``, per-frame modulation ``[B, F, 6, dim]`` and projected text ``[B, L, dim]``.

        Computed on every call, unless ``kv_cache`` carries a conditioning memo (streaming generation
        attaches one; training caches never do) and the call may use it
        (:class:`~stream_r1.models.condition_memo.ConditionMemo`): then a stream's timestep tensor is
        embedded once and its stored result returned, the very same values.
        """
        memo = kv_cache.conditions if kv_cache is not None else None
        if memo is not None and memo.usable(t, text):
            hit = memo.lookup(self, self.condition_embedder, t, text)
            if hit is not None:
                return hit  # type: ignore[return-value]
        else:
            memo = None
        temb, proj, text_out, _ = self.condition_embedder(t.flatten(), text, None, timestep_seq_len=t.shape[1])
        out = (temb, proj.unflatten(2, (6, -1)), text_out)
        if memo is not None:
            memo.store(self, self.condition_embedder, t, text, out)
        return out

    def _attention_inputs(
        self,
        f: int,
        hp: int,
        wp: int,
        frame_offset: int,
        frames_per_block: int | None,
        kv_cache: KVCache | None,
        write_cache: bool,
        device: torch.device,
    ) -> SelfAttentionInputs:
        """RoPE tables, mask builder and cache for one forward (validated before any heavy work)."""
        tokens_per_frame = hp * wp
        if kv_cache is not None:
            if kv_cache.tokens_per_frame != tokens_per_frame:
                raise ValueError(
                    f"KV cache was built for {kv_cache.tokens_per_frame} tokens per frame, this latent has "
                    f"{tokens_per_frame}; build the cache with the same latent height/width"
                )
            if frame_offset != kv_cache.frames_written:
                raise ValueError(
                    f"frame_offset={frame_offset} but the KV cache holds a stream up to frame "
                    f"{kv_cache.frames_written}; pass frame_offset={kv_cache.frames_written} or reset the cache"
                )
            n_k = kv_cache.attended_frames(f)
            k_rope = self.frame_rope.freqs(0, n_k, hp, wp, device)
            q_rope = k_rope.tail(f * tokens_per_frame)  # the chunk's own keys sit last, at the queries' positions
            return SelfAttentionInputs(q_rope, k_rope, None, kv_cache, write_cache)
        rope = self.frame_rope.freqs(frame_offset, f, hp, wp, device)
        build = None
        if frames_per_block is not None:
            if frames_per_block < 1:
                raise ValueError(f"frames_per_block={frames_per_block} must be >= 1")
            if f > frames_per_block:

                def build(flex: bool) -> Any:
                    if flex:
                        return flex_block_causal_mask(f, tokens_per_frame, frames_per_block, device)
                    return dense_block_causal_mask(f, tokens_per_frame, frames_per_block, device)[None, None]

        return SelfAttentionInputs(rope, rope, build)


# Names of diffusers hooks that skip block / attention computations on some steps.
_SKIPPING_HOOKS = ("fbc_", "mag_cache", "sea_cache", "taylorseer", "pyramid_attention", "faster_cache", "layer_skip")
