"""Attention processor of the causal student (docs/method.md §4.2, §4.4, §5 items 7, 10, 12).

``CausalWanAttnProcessor`` subclasses diffusers' ``WanAttnProcessor`` and is installed on every
``WanAttention`` of a :class:`~stream_r1.models.causal_wan.CausalWanTransformer` with
``set_attn_processor``. It receives everything explicitly (no state on modules):

* self-attention: :class:`SelfAttentionInputs` — separate RoPE for queries and keys (the keys of a
  re-indexed [sink ++ window] cache have other positions than the queries), an optional mask
  (dense boolean block-causal mask or flex ``BlockMask``), and an optional :class:`KVCache` that is read
  (virtual append of this chunk's fresh K/V) and, in the no-grad context pass only, written.
* cross-attention: all text tokens, no mask (Wan attends the zero padding too, §5 item 21); text K/V are
  taken from / put into the cache only while autograd is off.

q/k RMSNorm statistics are computed in fp32 whatever the run dtype (parity with Wan/Self-Forcing, §4.4).
Without ``inputs`` it behaves like the stock processor (same RoPE for q and k, ``attention_mask`` as is).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffusers.models.transformers.transformer_wan import WanAttention, WanAttnProcessor
from torch import Tensor

from stream_r1.models.kv_cache import KVCache
from stream_r1.models.rope import apply_rope

AttentionBackend = Literal["sdpa", "flex", "flash"]


def check_flash_available(device: torch.device) -> None:
    """Raise a teaching error unless flash-attn can run here (CUDA + the ``gpu`` extra).

    Raises:
        ValueError: not on CUDA, or ``flash_attn`` is not installed.
    """
    import importlib.util

    if device.type != "cuda" or importlib.util.find_spec("flash_attn") is None:
        raise ValueError(
            f"attention_backend='flash' needs CUDA and flash-attn (device={device.type}, flash_attn "
            f"{'installed' if importlib.util.find_spec('flash_attn') else 'missing'}); install the gpu extra "
            "(pip install 'stream-r1[gpu]') on a CUDA machine, or use 'sdpa' (PyTorch SDPA, which already picks "
            "its FlashAttention kernel on CUDA) or 'flex'"
        )


@dataclass
class SelfAttentionInputs:
    """Inputs shared by the self-attention of every layer in one forward.

    Attributes:
        q_rope: ``(cos, sin)`` ``[1, Nq, 1, head_dim]`` for the queries (this forward's tokens).
        k_rope: ``(cos, sin)`` ``[1, Nk, 1, head_dim]`` for the attended keys (cache + fresh).
        mask: None, a bool ``[Nq, Nk]`` mask (True = attend) or a flex ``BlockMask``.
        cache: KV cache to read (and to write when ``write_cache``), or None.
        write_cache: store this forward's K/V into ``cache`` (context pass; must run without grad).
        backend: ``"sdpa"`` (CPU and GPU), ``"flex"`` (``mask`` is a ``BlockMask``; GPU) or ``"flash"``
            (flash-attn on CUDA; only for unmasked attention — masked forwards use flex).
    """

    q_rope: tuple[Tensor, Tensor]
    k_rope: tuple[Tensor, Tensor]
    mask: Any = None
    cache: KVCache | None = None
    write_cache: bool = False
    backend: AttentionBackend = "sdpa"


def _rms_norm_fp32(norm: torch.nn.Module, x: Tensor) -> Tensor:
    """Apply a ``torch.nn.RMSNorm`` (or Identity) with fp32 statistics, returning ``x.dtype``."""
    if not isinstance(norm, torch.nn.RMSNorm):
        return norm(x)
    eps = norm.eps if norm.eps is not None else torch.finfo(torch.float32).eps
    weight = norm.weight.float() if norm.weight is not None else None
    return F.rms_norm(x.float(), norm.normalized_shape, weight, eps).to(x.dtype)


_COMPILED_FLEX: dict[str, Any] = {}


def _flex_fn(device_type: str) -> Any:
    """flex_attention, compiled once per process on CUDA (uncompiled it materialises the full score matrix)."""
    from torch.nn.attention.flex_attention import flex_attention

    if device_type != "cuda":
        return flex_attention  # eager reference path (CPU tests); no CPU backward in torch 2.13
    if "cuda" not in _COMPILED_FLEX:
        _COMPILED_FLEX["cuda"] = torch.compile(flex_attention, dynamic=False)
    return _COMPILED_FLEX["cuda"]


def _attend(q: Tensor, k: Tensor, v: Tensor, mask: Any, backend: AttentionBackend) -> Tensor:
    """Multi-head attention on ``[B, N, heads, head_dim]`` tensors; returns ``[B, Nq, heads*head_dim]``."""
    if backend == "flash":
        # flash-attn takes [B, N, heads, head_dim] directly; unmasked (the chunk attends to all it is given).
        from flash_attn import flash_attn_func

        if mask is not None:
            raise AssertionError("flash backend got a mask; masked forwards must use flex")
        return flash_attn_func(q, k, v, dropout_p=0.0, causal=False).flatten(2, 3)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    if backend == "flex":
        out = _flex_fn(q.device.type)(q, k, v, block_mask=mask)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
    return out.transpose(1, 2).flatten(2, 3)


class CausalWanAttnProcessor(WanAttnProcessor):
    """Block-causal / KV-cached attention for ``WanAttention`` (text-to-video only: no image K/V)."""

    def __call__(  # type: ignore[override]
        self,
        attn: WanAttention,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        rotary_emb: tuple[Tensor, Tensor] | None = None,
        *,
        inputs: SelfAttentionInputs | None = None,
        layer_idx: int = 0,
        cross_cache: KVCache | None = None,
    ) -> Tensor:
        """Run self- or cross-attention.

        Args:
            attn: the ``WanAttention`` module (its projections and norms are used as they are).
            hidden_states: ``[B, Nq, dim]``.
            encoder_hidden_states: text ``[B, L, dim]`` for cross-attention, None for self-attention.
            attention_mask: stock-compatible mask when ``inputs`` is None.
            rotary_emb: stock-compatible ``(cos, sin)`` when ``inputs`` is None.
            inputs: causal self-attention inputs (RoPE per side, mask, cache).
            layer_idx: index of the transformer block (selects the cache layer).
            cross_cache: cache whose text K/V slot of ``layer_idx`` may be used (only without grad).

        Returns:
            ``[B, Nq, dim]``.
        """
        if attn.add_k_proj is not None:
            raise ValueError("CausalWanAttnProcessor supports text-to-video Wan only (added_kv_proj_dim must be None)")
        if getattr(attn, "fused_projections", False):
            raise ValueError("CausalWanAttnProcessor needs unfused projections; call unfuse_qkv_projections()")
        if encoder_hidden_states is None:
            out = self._self_attention(attn, hidden_states, attention_mask, rotary_emb, inputs, layer_idx)
        else:
            out = self._cross_attention(attn, hidden_states, encoder_hidden_states, layer_idx, cross_cache)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)

    @staticmethod
    def _self_attention(
        attn: WanAttention,
        hidden_states: Tensor,
        attention_mask: Tensor | None,
        rotary_emb: tuple[Tensor, Tensor] | None,
        inputs: SelfAttentionInputs | None,
        layer_idx: int,
    ) -> Tensor:
        query = _rms_norm_fp32(attn.norm_q, attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))
        key = _rms_norm_fp32(attn.norm_k, attn.to_k(hidden_states)).unflatten(2, (attn.heads, -1))
        value = attn.to_v(hidden_states).unflatten(2, (attn.heads, -1))
        if inputs is None:
            if rotary_emb is not None:
                query, key = apply_rope(query, *rotary_emb), apply_rope(key, *rotary_emb)
            return _attend(query, key, value, attention_mask, "sdpa").type_as(query)

        if inputs.cache is not None:
            # Read = virtual append; the cache rows are never touched here (§5 item 7).
            keys, values = inputs.cache.attended(layer_idx, key, value)
            if inputs.write_cache:
                if torch.is_grad_enabled():
                    raise RuntimeError("KV cache writes must run under torch.no_grad() (context pass)")
                inputs.cache.store(layer_idx, key, value)
        else:
            keys, values = key, value
        query = apply_rope(query, *inputs.q_rope)
        keys = apply_rope(keys, *inputs.k_rope)
        return _attend(query, keys, values, inputs.mask, inputs.backend).type_as(query)

    @staticmethod
    def _cross_attention(
        attn: WanAttention,
        hidden_states: Tensor,
        text: Tensor,
        layer_idx: int,
        cross_cache: KVCache | None,
    ) -> Tensor:
        query = _rms_norm_fp32(attn.norm_q, attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))
        # A K/V built under no_grad would silently cut gradients to attn2.to_k/to_v (§5 item 7):
        # the text cache is used and filled only while autograd is off.
        use_cache = cross_cache is not None and not torch.is_grad_enabled()
        if use_cache and cross_cache.cross_keys[layer_idx] is not None:
            key, value = cross_cache.cross_keys[layer_idx], cross_cache.cross_values[layer_idx]
        else:
            key = _rms_norm_fp32(attn.norm_k, attn.to_k(text)).unflatten(2, (attn.heads, -1))
            value = attn.to_v(text).unflatten(2, (attn.heads, -1))
            if use_cache:
                cross_cache.cross_keys[layer_idx] = key
                cross_cache.cross_values[layer_idx] = value
        return _attend(query, key, value, None, "sdpa").type_as(query)
