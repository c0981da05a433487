"""The causal student behind diffusers' own seams: fused projections, LoRA scale, attention backends, caches.

Each behaviour is checked against what diffusers documents for (and the stock ``WanTransformer3DModel``
does with) the same call.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from diffusers import WanTransformer3DModel
from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig, SeaCacheConfig
from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry
from torch.profiler import ProfilerActivity, profile

from stream_r1.models.causal_wan import CausalWanTransformer
from stream_r1.models.kv_cache import KVCache

from .conftest import LATENT_HW

# Fused q/k/v is one matmul over the concatenated weights instead of three: the same products summed in
# another blocking order, so fp32 outputs agree to rounding (observed <= 2e-7 on outputs of size ~1).
FUSED_ATOL = 1e-5
SDPA_MATH = "aten::_scaled_dot_product_attention_math"
SDPA_FLASH_CPU = "aten::_scaled_dot_product_flash_attention_for_cpu"


def _latent(frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 16, frames, *LATENT_HW, generator=torch.Generator().manual_seed(seed))


def _cache(frames: int) -> KVCache:
    return KVCache.allocate(num_layers=2, batch_size=1, capacity_frames=frames, tokens_per_frame=16, heads=2, head_dim=16)


def _three_ways(model: CausalWanTransformer, text: torch.Tensor) -> list[torch.Tensor]:
    """Bidirectional, block-masked and cached chunk-by-chunk outputs of one 6-frame input."""
    x, t = _latent(6, seed=2), torch.tensor([[900.0] * 3 + [300.0] * 3])
    cache = _cache(6)
    with torch.no_grad():
        outs = [model(x, t, text, return_dict=False)[0], model(x, t, text, frames_per_block=3, return_dict=False)[0]]
        chunks = []
        for c in range(2):
            sl = slice(3 * c, 3 * c + 3)
            chunks.append(model(x[:, :, sl], t[:, sl], text, frame_offset=3 * c, kv_cache=cache, return_dict=False)[0])
            model(x[:, :, sl], t[:, sl], text, frame_offset=3 * c, kv_cache=cache, write_cache=True)
    return [*outs, torch.cat(chunks, dim=2)]


@pytest.fixture()
def restore_active_backend():
    """``set_attention_backend`` also sets diffusers' process-wide active backend: put it back."""
    old = _AttentionBackendRegistry._active_backend
    yield
    _AttentionBackendRegistry.set_active_backend(old)


def test_fused_projections_give_the_same_outputs_as_unfused_and_as_stock(
    stock_wan: WanTransformer3DModel, causal_wan: CausalWanTransformer, text_emb: torch.Tensor
) -> None:
    ref = _three_ways(causal_wan, text_emb)
    x, t = _latent(3), torch.tensor([500.0])
    causal_wan.fuse_qkv_projections()
    stock_wan.fuse_qkv_projections()
    assert causal_wan.blocks[0].attn1.fused_projections and hasattr(causal_wan.blocks[0].attn1, "to_qkv")
    fused = _three_ways(causal_wan, text_emb)
    with torch.no_grad():
        stock = stock_wan(x, t, text_emb, return_dict=False)[0]
        ours = causal_wan(x, t, text_emb, return_dict=False)[0]
    for a, b in zip(ref, fused, strict=True):
        assert (a - b).abs().max().item() <= FUSED_ATOL
    assert (stock - ours).abs().max().item() <= FUSED_ATOL
    # Fusing must really route through to_qkv: zeroing it changes the output.
    with torch.no_grad():
        causal_wan.blocks[0].attn1.to_qkv.weight.zero_()
        changed = causal_wan(x, t, text_emb, return_dict=False)[0]
    assert (changed - ours).abs().max().item() > 1e-3
    causal_wan.unfuse_qkv_projections()
    assert not causal_wan.blocks[0].attn1.fused_projections
    assert (_three_ways(causal_wan, text_emb)[0] - ref[0]).abs().max().item() == 0.0


def test_attention_kwargs_scale_is_accepted_like_the_stock_model(
    stock_wan: WanTransformer3DModel, causal_wan: CausalWanTransformer, text_emb: torch.Tensor
) -> None:
    """Without LoRA layers a scale changes nothing, on both models; the caller's dict is not consumed."""
    x, t = _latent(3), torch.tensor([400.0])
    kwargs = {"scale": 0.5}
    with torch.no_grad():
        ref = causal_wan(x, t, text_emb, return_dict=False)[0]
        ours = causal_wan(x, t, text_emb, return_dict=False, attention_kwargs=kwargs)[0]
        stock = stock_wan(x, t, text_emb, return_dict=False, attention_kwargs=kwargs)[0]
    assert kwargs == {"scale": 0.5}
    assert torch.equal(ours, ref)
    assert (ours - stock).abs().max().item() <= 1e-5


@pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="LoRA layers need peft (not installed)")
def test_lora_scale_matches_the_stock_model(
    stock_wan: WanTransformer3DModel, causal_wan: CausalWanTransformer, text_emb: torch.Tensor
) -> None:
    from peft import LoraConfig

    cfg = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False)
    torch.manual_seed(5)
    stock_wan.add_adapter(cfg)
    causal_wan.add_adapter(cfg)
    causal_wan.load_state_dict(stock_wan.state_dict(), strict=True)
    x, t = _latent(3), torch.tensor([400.0])
    with torch.no_grad():
        outs = {
            s: (
                causal_wan(x, t, text_emb, return_dict=False, attention_kwargs={"scale": s})[0],
                stock_wan(x, t, text_emb, return_dict=False, attention_kwargs={"scale": s})[0],
            )
            for s in (0.0, 0.5, 1.0)
        }
    for ours, stock in outs.values():
        assert (ours - stock).abs().max().item() <= 1e-5
    assert (outs[0.5][0] - outs[1.0][0]).abs().max().item() > 1e-4


def _sdpa_ops(model: CausalWanTransformer, text: torch.Tensor, **kwargs: object) -> set[str]:
    x = _latent(6, seed=3)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        model(x, torch.full((1, 6), 500.0), text, **kwargs)
    return {e.key for e in prof.key_averages() if "scaled_dot_product" in e.key}


def test_set_attention_backend_reaches_the_kernels(
    causal_wan: CausalWanTransformer, text_emb: torch.Tensor, restore_active_backend: None
) -> None:
    """diffusers' backend choice decides which aten kernel runs, masked and cached paths alike."""
    base = _three_ways(causal_wan, text_emb)
    assert SDPA_FLASH_CPU in _sdpa_ops(causal_wan, text_emb, frames_per_block=3)
    causal_wan.set_attention_backend("_native_math")
    assert all(p._attention_backend.value == "_native_math" for p in causal_wan.attn_processors.values())
    ops = _sdpa_ops(causal_wan, text_emb, frames_per_block=3)
    assert SDPA_MATH in ops and SDPA_FLASH_CPU not in ops
    for a, b in zip(base, _three_ways(causal_wan, text_emb), strict=True):
        assert (a - b).abs().max().item() <= 1e-5
    # A per-call backend overrides the processors' for self-attention (text cross-attention keeps math).
    ops = _sdpa_ops(causal_wan, text_emb, frames_per_block=3, attention_backend="sdpa")
    assert SDPA_FLASH_CPU in ops and SDPA_MATH in ops
    causal_wan.reset_attention_backend()  # processors back to diffusers' active backend, which we reset too
    _AttentionBackendRegistry.set_active_backend(AttentionBackendName.NATIVE)
    assert SDPA_MATH not in _sdpa_ops(causal_wan, text_emb, frames_per_block=3)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_flex_backend_takes_the_block_mask_as_a_block_mask(
    causal_wan: CausalWanTransformer, text_emb: torch.Tensor, restore_active_backend: None
) -> None:
    base = _three_ways(causal_wan, text_emb)
    causal_wan.set_attention_backend("flex")
    for a, b in zip(base, _three_ways(causal_wan, text_emb), strict=True):
        assert (a - b).abs().max().item() <= 1e-5


def test_a_backend_without_masks_fails_in_one_line_naming_it(
    causal_wan: CausalWanTransformer, text_emb: torch.Tensor, restore_active_backend: None
) -> None:
    causal_wan.set_attention_backend("_native_flash")  # PyTorch's flash kernel: no attn_mask
    x = _latent(6)
    with torch.no_grad(), pytest.raises(ValueError, match=r"^attention backend '_native_flash' cannot apply the block"):
        causal_wan(x, torch.zeros(1, 6), text_emb, frames_per_block=3)
    # the cached path needs no mask, so it runs on that backend, and agrees with the native one
    cache = _cache(3)
    with torch.no_grad():
        got = causal_wan(x[:, :, :3], torch.zeros(1, 3), text_emb, kv_cache=cache, return_dict=False)[0]
        ref = causal_wan(x[:, :, :3], torch.zeros(1, 3), text_emb, kv_cache=cache, attention_backend="sdpa")[0]
    assert (got - ref).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="attention_backend='nope'"):
        causal_wan(x, torch.zeros(1, 6), text_emb, attention_backend="nope")


@pytest.mark.parametrize(
    "config",
    [
        FirstBlockCacheConfig(threshold=0.2),
        MagCacheConfig(mag_ratios=[1.0] * 4, num_inference_steps=4),
        SeaCacheConfig(),
    ],
    ids=["first_block", "mag", "sea"],
)
def test_block_caches_are_refused_in_one_line(
    causal_wan: CausalWanTransformer, stock_wan: WanTransformer3DModel, config: object
) -> None:
    with pytest.raises(ValueError, match=rf"^CausalWanTransformer does not support {type(config).__name__}: .*K/V"):
        causal_wan.enable_cache(config)
    assert not causal_wan.is_cache_enabled
    if isinstance(config, FirstBlockCacheConfig):  # the stock model takes it: the refusal is ours
        stock_wan.enable_cache(config)
        assert stock_wan.is_cache_enabled


def test_block_cache_hooks_attached_directly_are_refused_at_forward(
    causal_wan: CausalWanTransformer, text_emb: torch.Tensor
) -> None:
    """Registering the block class with diffusers lets apply_first_block_cache hook it; the forward refuses."""
    from diffusers.hooks import apply_first_block_cache
    from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry

    from stream_r1.models.causal_wan import CausalWanTransformerBlock

    TransformerBlockRegistry.register(CausalWanTransformerBlock, TransformerBlockMetadata(return_hidden_states_index=0))
    try:
        apply_first_block_cache(causal_wan, FirstBlockCacheConfig(threshold=0.2))
        with torch.no_grad(), pytest.raises(ValueError, match=r"^block hook 'fbc_.*skips blocks"):
            causal_wan(_latent(3), torch.zeros(1, 3), text_emb, kv_cache=_cache(3), write_cache=True)
    finally:
        TransformerBlockRegistry._registry.pop(CausalWanTransformerBlock, None)
