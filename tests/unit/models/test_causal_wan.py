"""CausalWanTransformer: stock parity, state-dict compatibility, block-causal mask vs KV cache."""

from __future__ import annotations

import pytest
import torch
from diffusers import WanTransformer3DModel

from stream_r1.models.block_mask import dense_block_causal_mask
from stream_r1.models.causal_wan import CausalWanTransformer
from stream_r1.models.condition_memo import ConditionMemo
from stream_r1.models.denoiser import CausalDenoiser
from stream_r1.models.kv_cache import KVCache

from .conftest import LATENT_HW, TINY_WAN


def _latent(frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 16, frames, *LATENT_HW, generator=torch.Generator().manual_seed(seed))


def _full_cache(frames: int) -> KVCache:
    return KVCache.allocate(
        num_layers=2, batch_size=1, capacity_frames=frames, tokens_per_frame=16, heads=2, head_dim=16
    )


def test_state_dict_round_trip_is_strict(stock_wan: WanTransformer3DModel) -> None:
    causal = CausalWanTransformer(**TINY_WAN)
    assert causal.load_state_dict(stock_wan.state_dict(), strict=True).missing_keys == []
    assert list(causal.state_dict()) == list(stock_wan.state_dict())
    back = WanTransformer3DModel(**TINY_WAN)
    back.load_state_dict(causal.state_dict(), strict=True)
    for k, v in back.state_dict().items():
        assert torch.equal(v, stock_wan.state_dict()[k]), k
    public = {k: v for k, v in stock_wan.config.items() if not k.startswith("_")}
    assert {k: v for k, v in causal.config.items() if not k.startswith("_")} == public


def test_save_and_from_pretrained(tmp_path, stock_wan: WanTransformer3DModel) -> None:
    stock_wan.save_pretrained(tmp_path / "stock")
    causal = CausalWanTransformer.from_pretrained(tmp_path / "stock")
    assert isinstance(causal, CausalWanTransformer)
    for k, v in causal.state_dict().items():
        assert torch.equal(v, stock_wan.state_dict()[k]), k
    causal.save_pretrained(tmp_path / "causal")  # and back: the student loads as a stock critic/teacher
    stock = WanTransformer3DModel.from_pretrained(tmp_path / "causal")
    assert type(stock) is WanTransformer3DModel
    for k, v in stock.state_dict().items():
        assert torch.equal(v, stock_wan.state_dict()[k]), k


@pytest.mark.parametrize("frames", [1, 3])
def test_single_chunk_without_cache_equals_stock(
    stock_wan: WanTransformer3DModel, causal_wan: CausalWanTransformer, text_emb: torch.Tensor, frames: int
) -> None:
    x, t = _latent(frames), torch.tensor([612.5])
    with torch.no_grad():
        ref = stock_wan(x, t, text_emb, return_dict=False)[0]
        out = causal_wan(x, t, text_emb, return_dict=False)[0]
        # a one-chunk block mask and a one-chunk cached pass are the same geometry
        masked = causal_wan(x, t, text_emb, frames_per_block=3, return_dict=False)[0]
        cached = causal_wan(x, t.expand(1, frames), text_emb, kv_cache=_full_cache(frames), return_dict=False)[0]
    assert out.shape == ref.shape == (1, 16, frames, *LATENT_HW)
    for got in (out, masked, cached):
        assert (got - ref).abs().max().item() <= 1e-5


def test_per_frame_timesteps_match_stock_per_token_path(
    stock_wan: WanTransformer3DModel, causal_wan: CausalWanTransformer, text_emb: torch.Tensor
) -> None:
    x = _latent(3)
    t = torch.tensor([[900.0, 500.0, 100.0]])
    with torch.no_grad():
        per_token = t.repeat_interleave(16, dim=1)  # diffusers' 2-D (Wan 2.2) timestep path
        ref = stock_wan(x, per_token, text_emb, return_dict=False)[0]
        out = causal_wan(x, t, text_emb, return_dict=False)[0]
    assert (out - ref).abs().max().item() <= 1e-5


def test_block_mask_structure() -> None:
    mask = dense_block_causal_mask(num_frames=6, tokens_per_frame=2, frames_per_block=3)
    assert mask.shape == (12, 12) and mask.dtype == torch.bool
    frame = torch.arange(12) // 2
    for q in range(12):
        for k in range(12):
            assert bool(mask[q, k]) == (frame[k] // 3 <= frame[q] // 3)
    assert mask[:6, :6].all()  # bidirectional inside chunk 0
    assert not mask[:6, 6:].any()  # chunk 0 never sees chunk 1
    assert mask[6:, :].all()  # chunk 1 sees everything up to its end


def test_cached_chunks_equal_block_masked_full_sequence(
    causal_wan: CausalWanTransformer, text_emb: torch.Tensor
) -> None:
    """Key test: teacher-forced chunk-by-chunk with a full cache == masked full sequence."""
    frames, fpb = 9, 3
    x = _latent(frames, seed=3)
    t = torch.rand(1, frames, generator=torch.Generator().manual_seed(4)) * 1000
    cache = _full_cache(frames)
    with torch.no_grad():
        full = causal_wan(x, t, text_emb, frames_per_block=fpb, return_dict=False)[0]
        chunks = []
        for c in range(frames // fpb):
            sl = slice(c * fpb, (c + 1) * fpb)
            out = causal_wan(x[:, :, sl], t[:, sl], text_emb, frame_offset=c * fpb, kv_cache=cache, return_dict=False)
            chunks.append(out[0])
            assert cache.length_frames == c * fpb  # reads never write
            causal_wan(x[:, :, sl], t[:, sl], text_emb, frame_offset=c * fpb, kv_cache=cache, write_cache=True)
    assert cache.length_frames == cache.frames_written == frames
    diff = (torch.cat(chunks, dim=2) - full).abs().max().item()
    assert diff <= 1e-5, diff


def test_later_chunk_timesteps_do_not_change_earlier_outputs(
    causal_wan: CausalWanTransformer, text_emb: torch.Tensor
) -> None:
    x = _latent(6, seed=5)
    t1 = torch.tensor([[800.0] * 3 + [400.0] * 3])
    t2 = torch.tensor([[800.0] * 3 + [50.0] * 3])
    x2 = x.clone()
    x2[:, :, 3:] += 1.0
    with torch.no_grad():
        a = causal_wan(x, t1, text_emb, frames_per_block=3, return_dict=False)[0]
        b = causal_wan(x2, t2, text_emb, frames_per_block=3, return_dict=False)[0]
    assert torch.allclose(a[:, :, :3], b[:, :, :3], atol=1e-6)
    assert not torch.allclose(a[:, :, 3:], b[:, :, 3:], atol=1e-3)


def test_masked_path_backward_reaches_all_parameters(
    causal_wan: CausalWanTransformer, text_emb: torch.Tensor
) -> None:
    causal_wan.train()
    causal_wan.enable_gradient_checkpointing()
    x = _latent(6, seed=6).requires_grad_(True)
    out = causal_wan(x, torch.tensor([[900.0] * 3 + [300.0] * 3]), text_emb, frames_per_block=3, return_dict=False)[0]
    out.square().mean().backward()
    missing = [n for n, p in causal_wan.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    # chunk 0 outputs do not depend on chunk 1 inputs
    x.grad = None
    out = causal_wan(x, torch.tensor([[900.0] * 6]), text_emb, frames_per_block=3, return_dict=False)[0]
    (g,) = torch.autograd.grad(out[:, :, :3].sum(), x)
    assert g[:, :, 3:].abs().max() == 0 and g[:, :, :3].abs().max() > 0


def test_cache_read_inside_grad_keeps_cross_attention_gradients(
    causal_wan: CausalWanTransformer, text_emb: torch.Tensor
) -> None:
    """A text K/V cached under no_grad must not be reused in a grad-enabled call (docs/method.md §5 item 7)."""
    cache = _full_cache(6)
    x = _latent(6, seed=7)
    with torch.no_grad():
        causal_wan(x[:, :, :3], torch.zeros(1, 3), text_emb, kv_cache=cache, write_cache=True)
    assert cache.cross_keys[0] is not None
    out = causal_wan(x[:, :, 3:], torch.full((1, 3), 500.0), text_emb, frame_offset=3, kv_cache=cache)[0]
    out.sum().backward()
    for name in ("to_k", "to_v"):
        assert getattr(causal_wan.blocks[0].attn2, name).weight.grad.abs().sum() > 0


def test_bad_inputs_raise_clear_errors(causal_wan: CausalWanTransformer, text_emb: torch.Tensor) -> None:
    cache = _full_cache(6)
    with pytest.raises(ValueError, match="frame_offset=3"):
        causal_wan(_latent(3), torch.zeros(1, 3), text_emb, frame_offset=3, kv_cache=cache)
    with pytest.raises(ValueError, match="timestep"):
        causal_wan(_latent(3), torch.zeros(1, 2), text_emb)
    with pytest.raises(ValueError, match="overflow"):
        causal_wan(_latent(9), torch.zeros(1, 9), text_emb, kv_cache=cache)
    with pytest.raises(ValueError, match="rope_max_seq_len"):
        causal_wan(_latent(3), torch.zeros(1, 3), text_emb, frame_offset=63)
    with pytest.raises(RuntimeError, match="no_grad"):
        causal_wan(_latent(3), torch.zeros(1, 3), text_emb, kv_cache=cache, write_cache=True)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_flex_block_mask_forward_matches_dense_sdpa(causal_wan: CausalWanTransformer, text_emb: torch.Tensor) -> None:
    x, t = _latent(6, seed=8), torch.tensor([[900.0] * 3 + [200.0] * 3])
    with torch.no_grad():
        dense = causal_wan(x, t, text_emb, frames_per_block=3, return_dict=False)[0]
        flex = causal_wan(x, t, text_emb, frames_per_block=3, attention_backend="flex", return_dict=False)[0]
    assert (dense - flex).abs().max().item() <= 1e-5


def test_checkpointed_cached_step_gives_the_same_gradients(
    causal_wan: CausalWanTransformer, text_emb: torch.Tensor
) -> None:
    """Recomputation reads the same (unchanged) cache rows, so checkpointing is exact (docs/method.md §5 item 7)."""
    cache = _full_cache(6)
    x = _latent(6, seed=9)
    with torch.no_grad():
        causal_wan(x[:, :, :3], torch.zeros(1, 3), text_emb, kv_cache=cache, write_cache=True)
    grads = []
    for ckpt in (False, True):
        causal_wan.zero_grad()
        if ckpt:
            causal_wan.enable_gradient_checkpointing()
        out = causal_wan(x[:, :, 3:], torch.full((1, 3), 700.0), text_emb, frame_offset=3, kv_cache=cache)[0]
        out.square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in causal_wan.named_parameters()})
    causal_wan.disable_gradient_checkpointing()
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], atol=1e-6), name


def test_text_kv_cache_is_bound_to_one_text_tensor(causal_wan: CausalWanTransformer, text_emb: torch.Tensor) -> None:
    cache = _full_cache(6)
    x = _latent(3, seed=10)
    with torch.no_grad():
        causal_wan(x, torch.zeros(1, 3), text_emb, kv_cache=cache)
        cached_k = cache.cross_keys[1]
        causal_wan(x, torch.zeros(1, 3), text_emb, kv_cache=cache)
        assert cache.cross_keys[1] is cached_k  # same tensor -> reused
        other = text_emb.flip(1).clone()
        got = causal_wan(x, torch.zeros(1, 3), other, kv_cache=cache, return_dict=False)[0]
        ref = causal_wan(x, torch.zeros(1, 3), other, kv_cache=_full_cache(6), return_dict=False)[0]
    assert cache.cross_keys[1] is not cached_k
    assert torch.equal(got, ref)


def _embedder_calls(model: CausalWanTransformer) -> tuple[list[int], object]:
    calls: list[int] = []
    return calls, model.condition_embedder.register_forward_hook(lambda *_: calls.append(1))


def test_stream_conditioning_memo_reuses_only_the_same_tensors_and_weights(text_emb: torch.Tensor) -> None:
    """A cache with a conditioning memo embeds a timestep tensor once; a new tensor, an in-place change of
    that tensor or of an embedder weight, another model, grad mode or a reset recompute it. Every result
    equals the one of a cache without a memo (which never reuses) bit for bit."""
    model = CausalWanTransformer(**TINY_WAN).eval()
    cache, x, t = _full_cache(6), _latent(3, seed=11), torch.full((1, 3), 625.0)
    cache.conditions = ConditionMemo()
    calls, hook = _embedder_calls(model)

    def both(m: CausalWanTransformer = model) -> tuple[torch.Tensor, torch.Tensor]:
        got = m(x, t, text_emb, kv_cache=cache, return_dict=False)[0]
        return got, m(x, t, text_emb, kv_cache=_full_cache(6), return_dict=False)[0]

    with torch.no_grad():
        first, ref = both()
        assert torch.equal(first, ref) and len(calls) == 2
        again, _ = both()
        assert torch.equal(again, first) and len(calls) == 3  # reused: only the memo-less cache embedded
        assert (cache.conditions.hits, cache.conditions.misses) == (1, 1)
        t.fill_(400.0)  # same tensor, new value
        got, ref = both()
        assert torch.equal(got, ref) and not torch.equal(got, first)
        model.condition_embedder.time_proj.weight.mul_(1.5)  # a weight written in place
        got2, ref = both()
        assert torch.equal(got2, ref) and not torch.equal(got2, got)
        other = CausalWanTransformer(**TINY_WAN).eval()  # another model on the same cache and tensors
        other.load_state_dict(model.state_dict())
        other.condition_embedder.time_proj.weight.mul_(0.5)
        got3, ref = both(other)
        assert torch.equal(got3, ref) and not torch.equal(got3, got2)
        cache.reset()
        hits = cache.conditions.hits
        both()
        assert cache.conditions.hits == hits  # a reset stream starts over
    with torch.enable_grad():
        model(x, t, text_emb, kv_cache=cache)
    assert cache.conditions.hits == hits  # never with autograd
    hook.remove()


def test_a_cache_without_memo_follows_weight_updates_that_keep_version_counters(text_emb: torch.Tensor) -> None:
    """FSDP2 writes its gathered parameters without bumping their version counters. The caches the training
    rollout builds carry no conditioning memo, so a forward after such an update, with the very same
    timestep tensor and cache, sees the new weights; a memo on that cache would return the stale ones."""
    model = CausalWanTransformer(**TINY_WAN).eval()
    den = CausalDenoiser(model, frames_per_block=3)
    cache = den.new_cache(1, 6, LATENT_HW, rolling=False, dtype=torch.float32, device="cpu")
    assert cache.conditions is None
    x, t = _latent(3, seed=12), torch.full((1, 3), 625.0)
    with torch.no_grad():
        before = model(x, t, text_emb, kv_cache=cache, return_dict=False)[0]
        weight = model.condition_embedder.time_embedder.linear_1.weight
        with torch.autograd._unsafe_preserve_version_counter(weight):
            weight.mul_(1.5)
        after = model(x, t, text_emb, kv_cache=cache, return_dict=False)[0]
        fresh = model(x, t.clone(), text_emb, kv_cache=_full_cache(6), return_dict=False)[0]
    assert torch.equal(after, fresh) and not torch.equal(after, before)


def test_weightless_layer_norms_with_an_all_ones_weight_are_bit_identical(causal_wan: CausalWanTransformer) -> None:
    """The blocks' norm1/norm3 and the head's norm_out run with an all-ones weight without autograd: the same
    bits as the weightless norm (checked on random and on large-magnitude rows); with autograd the module."""
    from stream_r1.models.causal_wan import _layer_norm

    x = torch.randn(2, 1170, 32, generator=torch.Generator().manual_seed(4))
    x[0] *= 1e4
    for norm in (causal_wan.blocks[0].norm1, causal_wan.blocks[1].norm3, causal_wan.norm_out):
        assert norm.weight is None
        with torch.no_grad():
            got, ref = _layer_norm(norm, x), norm(x)
        assert torch.equal(got.view(torch.int32), ref.view(torch.int32))
        g = x.clone().requires_grad_(True)
        out = _layer_norm(norm, g)
        out.square().sum().backward()
        h = x.clone().requires_grad_(True)
        norm(h).square().sum().backward()
        assert torch.equal(out, norm(x)) and torch.equal(g.grad, h.grad)


def test_blocks_are_called_as_modules_so_wrappers_see_them(
    causal_wan: CausalWanTransformer, text_emb: torch.Tensor
) -> None:
    """FSDP / checkpoint wrappers hook a block's ``__call__``; the causal forward must go through it."""
    from diffusers.models.transformers.transformer_wan import WanTransformerBlock

    calls: list[int] = []
    handles = [b.register_forward_pre_hook(lambda m, a, i=i: calls.append(i)) for i, b in enumerate(causal_wan.blocks)]
    with torch.no_grad():
        causal_wan(_latent(3), torch.zeros(1, 3), text_emb, frames_per_block=3)
    for h in handles:
        h.remove()
    assert calls == [0, 1]
    assert all(isinstance(b, WanTransformerBlock) for b in causal_wan.blocks)
