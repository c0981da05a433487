"""Attention processor of the causal student, routed through diffusers' attention dispatch.

``CausalWanAttnProcessor`` subclasses diffusers' ``WanAttnProcessor`` and is installed on every
``WanAttention`` of a :class:`~stream_r1.models.causal_wan.CausalWanTransformer` with
``set_attn_processor``. Every attention product goes through ``diffusers.models.attention_dispatch.
dispatch_attention_fn`` with the processor's ``_attention_backend`` (what ``model.set_attention_backend``
sets; None = diffusers' active backend), so the native / flex / flash / sage / xformers kernels are
reachable exactly as on the stock model. Fused projections (``fuse_qkv_projections()``) are honoured.

Self-attention receives :class:`SelfAttentionInputs` explicitly (no state on modules): separate RoPE for
queries and keys (the keys of a re-indexed [sink ++ window] cache have other positions than the queries),
an optional block-causal mask, an optional :class:`KVCache` that is read (virtual append of this chunk's
fresh K/V) and, in the no-grad context pass only, written. The mask is built once per forward in the form
the backend takes (a dense boolean mask for the SDPA family, a ``BlockMask`` for flex); a backend that
cannot apply a mask raises one line naming it. The cached path attends everything it is given (the cache
selects the keys), so it runs on every backend.

Cross-attention attends all text tokens without a mask (Wan attends the zero padding too); text K/V are
taken from / put into the cache only while autograd is off.

q/k RMSNorm statistics are computed in fp32 whatever the run dtype (parity with Wan / Self-Forcing).
Without ``inputs`` it behaves like the stock processor (same RoPE for q and k, ``attention_mask`` as is).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffusers.models.attention_dispatch import (
    AttentionBackendName,
    _AttentionBackendRegistry,
    dispatch_attention_fn,
)
from diffusers.models.transformers.transformer_wan import WanAttention, WanAttnProcessor
from torch import Tensor

from stream_r1.models.kv_cache import KVCache
from stream_r1.models.rope import Rope, apply_rope, half_tables

AttentionBackend = Literal["sdpa", "flex", "flash"]

# The project's ``model.attention_backend`` names -> diffusers backends.
PROJECT_BACKENDS: dict[str, AttentionBackendName] = {
    "sdpa": AttentionBackendName.NATIVE,
    "flex": AttentionBackendName.FLEX,
    "flash": AttentionBackendName.FLASH,
}
# diffusers backends whose kernels take an arbitrary boolean mask (the SDPA family) or a BlockMask (flex).
MASK_BACKENDS = frozenset(
    {
        AttentionBackendName.NATIVE,
        AttentionBackendName.FLEX,
        AttentionBackendName._NATIVE_MATH,
        AttentionBackendName._NATIVE_EFFICIENT,
        AttentionBackendName._NATIVE_CUDNN,
    }
)


def resolve_backend(name: str | AttentionBackendName | None) -> AttentionBackendName | None:
    """A project name (``sdpa``/``flex``/``flash``) or a diffusers backend name -> ``AttentionBackendName``.

    Raises:
        ValueError: an unknown name (the message lists both vocabularies).
    """
    if name is None or isinstance(name, AttentionBackendName):
        return name
    if name in PROJECT_BACKENDS:
        return PROJECT_BACKENDS[name]
    try:
        return AttentionBackendName(name.lower())
    except ValueError:
        known = ", ".join(sorted(x.value for x in AttentionBackendName))
        raise ValueError(f"attention_backend={name!r}; use 'sdpa', 'flex', 'flash' or a diffusers backend ({known})") from None


def check_flash_available(device: torch.device) -> None:
    """Raise a teaching error unless flash-attn can run here (CUDA + the ``gpu`` extra).

    Raises:
        ValueError: not on CUDA, or ``flash_attn`` is not installed.
    """
    if device.type != "cuda" or importlib.util.find_spec("flash_attn") is None:
        raise ValueError(
            f"attention_backend='flash' needs CUDA and flash-attn (device={device.type}, flash_attn "
            f"{'installed' if importlib.util.find_spec('flash_attn') else 'missing'}); install the gpu extra "
            "(pip install 'stream-r1[gpu]') on a CUDA machine, or use 'sdpa' (PyTorch SDPA, which already picks "
            "its FlashAttention kernel on CUDA) or 'flex'"
        )


MaskBuilder = Callable[[bool], Any]


@dataclass
class SelfAttentionInputs:
    """Inputs shared by the self-attention of every layer in one forward.

    Attributes:
        q_rope: rotation of the queries (this forward's ``Nq`` tokens).
        k_rope: rotation of the ``Nk`` attended keys (cache + fresh).
        build_mask: None (no mask), or ``build_mask(flex)`` -> the block-causal mask as a flex ``BlockMask``
            (``flex=True``) or a dense bool ``[1, 1, Nq, Nk]`` tensor (True = attend); called at most once
            per form and forward.
        cache: KV cache to read (and to write when ``write_cache``), or None.
        write_cache: store this forward's K/V into ``cache`` (context pass; must run without grad).
        backend: per-forward self-attention backend overriding the processors' (None = the processor's).
        masked_backend: backend for masked self-attention when ``backend`` cannot take a mask (the project's
            ``flash`` setting runs its masked full-sequence forwards on flex), or None.
    """

    q_rope: Rope
    k_rope: Rope
    build_mask: MaskBuilder | None = None
    cache: KVCache | None = None
    write_cache: bool = False
    backend: AttentionBackendName | None = None
    masked_backend: AttentionBackendName | None = None
    _masks: dict[bool, Any] = field(default_factory=dict, repr=False)

    def mask(self, flex: bool) -> Any:
        """The block mask in the form a flex (``True``) or SDPA-family (``False``) kernel takes."""
        if flex not in self._masks:
            self._masks[flex] = self.build_mask(flex)
        return self._masks[flex]


def _rms_norm_fp32(norm: torch.nn.Module, x: Tensor) -> Tensor:
    """Apply a ``torch.nn.RMSNorm`` (or Identity) with fp32 statistics, returning ``x.dtype``."""
    if not isinstance(norm, torch.nn.RMSNorm):
        return norm(x)
    eps = norm.eps if norm.eps is not None else torch.finfo(torch.float32).eps
    weight = norm.weight.float() if norm.weight is not None else None
    return F.rms_norm(x.float(), norm.normalized_shape, weight, eps).to(x.dtype)


_COMPILED_DISPATCH: list[Callable[..., Tensor]] = []


def _dispatch(q: Tensor, k: Tensor, v: Tensor, mask: Any, backend: AttentionBackendName | None) -> Tensor:
    """``dispatch_attention_fn`` on ``[B, N, heads, head_dim]``; returns ``[B, Nq, heads*head_dim]``.

    Eager flex on CUDA materialises the whole score matrix (tens of GB at full size), so outside an
    enclosing ``torch.compile`` the flex dispatch runs through one compiled copy of the dispatch function.
    """
    attend = dispatch_attention_fn
    active = backend if backend is not None else _AttentionBackendRegistry._active_backend
    if active == AttentionBackendName.FLEX and q.is_cuda and not torch.compiler.is_compiling():
        if not _COMPILED_DISPATCH:
            _COMPILED_DISPATCH.append(torch.compile(dispatch_attention_fn, dynamic=False))
        attend = _COMPILED_DISPATCH[0]
    out = attend(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False, backend=backend)
    return out.flatten(2, 3)


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
        kv_only: bool = False,
    ) -> Tensor | None:
        """Run self- or cross-attention.

        Args:
            attn: the ``WanAttention`` module (its projections, fused or not, and norms are used as they are).
            hidden_states: ``[B, Nq, dim]``.
            encoder_hidden_states: text ``[B, L, dim]`` for cross-attention, None for self-attention.
            attention_mask: stock-compatible mask when ``inputs`` is None.
            rotary_emb: stock-compatible ``(cos, sin)`` when ``inputs`` is None.
            inputs: causal self-attention inputs (RoPE per side, mask, cache).
            layer_idx: index of the transformer block (selects the cache layer).
            cross_cache: cache whose text K/V slot of ``layer_idx`` may be used (only without grad).
            kv_only: self-attention of a context pass whose output nobody reads (the last block): store
                this chunk's K/V into ``inputs.cache`` and return None.

        Returns:
            ``[B, Nq, dim]``, or None with ``kv_only``.
        """
        if attn.add_k_proj is not None:
            raise ValueError("CausalWanAttnProcessor supports text-to-video Wan only (added_kv_proj_dim must be None)")
        if kv_only:
            self._store_only(attn, hidden_states, inputs, layer_idx)
            return None
        if encoder_hidden_states is None:
            out = self._self_attention(attn, hidden_states, attention_mask, rotary_emb, inputs, layer_idx)
        else:
            out = self._cross_attention(attn, hidden_states, encoder_hidden_states, layer_idx, cross_cache)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)

    def _masked(self, inputs: SelfAttentionInputs, backend: AttentionBackendName | None) -> tuple[Any, Any]:
        """(backend, mask) for a masked self-attention: the mask in the backend's form, or one clear error."""
        active = backend if backend is not None else _AttentionBackendRegistry._active_backend
        if active not in MASK_BACKENDS:
            if inputs.masked_backend is None:
                raise ValueError(
                    f"attention backend {active.value!r} cannot apply the block-causal mask of a full-sequence "
                    "forward (frames_per_block); set 'native' or 'flex' for masked forwards, or stream with a KV cache"
                )
            backend = active = inputs.masked_backend
        return backend, inputs.mask(active == AttentionBackendName.FLEX)

    @staticmethod
    def _qkv(attn: WanAttention, hidden_states: Tensor, need_query: bool = True) -> tuple[Tensor | None, Tensor, Tensor]:
        """Normed, head-split ``[B, N, heads, head_dim]`` q (or None), k, v from fused or separate projections."""
        if getattr(attn, "fused_projections", False):
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            query = attn.to_q(hidden_states) if need_query else None
            key, value = attn.to_k(hidden_states), attn.to_v(hidden_states)
        if query is not None:
            query = _rms_norm_fp32(attn.norm_q, query).unflatten(2, (attn.heads, -1))
        key = _rms_norm_fp32(attn.norm_k, key).unflatten(2, (attn.heads, -1))
        return query, key, value.unflatten(2, (attn.heads, -1))

    def _store_only(
        self, attn: WanAttention, hidden_states: Tensor, inputs: SelfAttentionInputs | None, layer_idx: int
    ) -> None:
        if inputs is None or inputs.cache is None or not inputs.write_cache or torch.is_grad_enabled():
            raise RuntimeError("kv_only needs a cache-writing context pass under torch.no_grad()")
        _, key, value = self._qkv(attn, hidden_states, need_query=False)
        inputs.cache.store(layer_idx, key, value)

    def _self_attention(
        self,
        attn: WanAttention,
        hidden_states: Tensor,
        attention_mask: Tensor | None,
        rotary_emb: tuple[Tensor, Tensor] | None,
        inputs: SelfAttentionInputs | None,
        layer_idx: int,
    ) -> Tensor:
        query, key, value = self._qkv(attn, hidden_states)
        backend = self._attention_backend
        if inputs is None:
            if rotary_emb is not None:
                rope = half_tables(*rotary_emb)
                query, key = apply_rope(query, rope), apply_rope(key, rope)
            return _dispatch(query, key, value, attention_mask, backend).type_as(query)

        cache = inputs.cache
        if inputs.write_cache and torch.is_grad_enabled():
            raise RuntimeError("KV cache writes must run under torch.no_grad() (context pass)")
        if cache is not None and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
            # Streaming read: the cached rows' rotated keys are kept for the chunk's next reads.
            keys, values = cache.attended_rotated(layer_idx, key, value, inputs.k_rope)
        elif cache is not None:
            # Read = virtual append (under autograd: fresh tensors; the stored rows are never touched).
            keys, values = cache.attended(layer_idx, key, value)
            keys = apply_rope(keys, inputs.k_rope)
        else:
            keys = apply_rope(key, inputs.k_rope)
            values = value
        if inputs.backend is not None:
            backend = inputs.backend
        mask = None
        if inputs.build_mask is not None:
            backend, mask = self._masked(inputs, backend)
        query = apply_rope(query, inputs.q_rope)
        out = _dispatch(query, keys, values, mask, backend).type_as(query)
        if inputs.write_cache:
            # After the attention: the store (and the eviction it applies) rewrites the rows read above.
            cache.store(layer_idx, key, value)
        return out

    def _cross_attention(
        self,
        attn: WanAttention,
        hidden_states: Tensor,
        text: Tensor,
        layer_idx: int,
        cross_cache: KVCache | None,
    ) -> Tensor:
        query = _rms_norm_fp32(attn.norm_q, attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))
        # A K/V built under no_grad would silently cut gradients to attn2.to_k/to_v:
        # the text cache is used and filled only while autograd is off.
        use_cache = cross_cache is not None and not torch.is_grad_enabled()
        if use_cache and cross_cache.cross_keys[layer_idx] is not None:
            key, value = cross_cache.cross_keys[layer_idx], cross_cache.cross_values[layer_idx]
        else:
            if getattr(attn, "fused_projections", False):
                key, value = attn.to_kv(text).chunk(2, dim=-1)
            else:
                key, value = attn.to_k(text), attn.to_v(text)
            key = _rms_norm_fp32(attn.norm_k, key).unflatten(2, (attn.heads, -1))
            value = value.unflatten(2, (attn.heads, -1))
            if use_cache:
                cross_cache.cross_keys[layer_idx] = key
                cross_cache.cross_values[layer_idx] = value
        return _dispatch(query, key, value, None, self._attention_backend).type_as(query)
