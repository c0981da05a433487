"""KVCache: full and rolling (Reward Forcing EMA-sink) geometry on hand-computed numbers."""

from __future__ import annotations

import pytest
import torch

from stream_r1.models.causal_wan import CausalWanTransformer
from stream_r1.models.denoiser import CausalDenoiser
from stream_r1.models.kv_cache import KVCache


def _cache(capacity: int, *, window: int, sink: int, rolling: bool, alpha: float = 0.999) -> KVCache:
    # one token per frame, one head of dim 1: K/V values are the frame labels themselves
    return KVCache.allocate(
        num_layers=1,
        batch_size=1,
        capacity_frames=capacity,
        tokens_per_frame=1,
        heads=1,
        head_dim=1,
        window_frames=window,
        sink_frames=sink,
        sink_ema_alpha=alpha,
        rolling=rolling,
        dtype=torch.float64,
    )


def _frames(*vals: float) -> torch.Tensor:
    return torch.tensor(vals, dtype=torch.float64).view(1, -1, 1, 1)


def _append(cache: KVCache, *vals: float) -> None:
    kv = _frames(*vals)
    cache.store(0, kv, -kv)
    cache.advance(len(vals))


def _keys(cache: KVCache, *vals: float) -> list[float]:
    k, v = cache.attended(0, _frames(*vals), -_frames(*vals))
    assert torch.equal(v, -k)
    return [round(x, 6) for x in k.flatten().tolist()]


def test_full_cache_attends_everything_and_overflow_raises() -> None:
    cache = _cache(6, window=-1, sink=0, rolling=False)
    _append(cache, 1, 2, 3)
    assert _keys(cache, 4, 5, 6) == [1, 2, 3, 4, 5, 6]
    _append(cache, 4, 5, 6)
    with pytest.raises(ValueError, match="overflow"):
        cache.attended_frames(3)


def test_rolling_ema_sink_on_eviction_of_one_sink_sized_chunk() -> None:
    cache = _cache(9, window=9, sink=3, rolling=True)
    for chunk in ((1, 2, 3), (4, 5, 6), (7, 8, 9)):
        _append(cache, *chunk)
    # Storing chunk 2 filled the 9 frames; the next 3-frame chunk needs (4,5,6) gone == sink size, so the
    # store already made sink = 0.999*sink + 0.001*evicted and rolled (7,8,9) left: reads redo nothing.
    assert (cache.length_frames, cache.eviction_frames(3)) == (6, 0)
    before = cache.keys[0].clone()
    assert _keys(cache, 10, 11, 12) == [1.003, 2.003, 3.003, 7, 8, 9, 10, 11, 12]
    assert _keys(cache, 10, 11, 12) == [1.003, 2.003, 3.003, 7, 8, 9, 10, 11, 12]  # a second read: same
    assert torch.equal(cache.keys[0], before)  # reading never mutates
    _append(cache, 10, 11, 12)
    # stored (10,11,12), then evicted (7,8,9) for the next chunk: sink 0.999*1.003 + 0.001*7 = 1.008997
    assert [round(x, 6) for x in cache.keys[0].flatten()[:6].tolist()] == [1.008997, 2.008997, 3.008997, 10, 11, 12]
    assert cache.values[0].flatten()[0].item() == pytest.approx(-1.008997)
    assert (cache.length_frames, cache.frames_written) == (6, 12)
    assert _keys(cache, 13, 14, 15)[:4] == [1.008997, 2.008997, 3.008997, 10]
    with pytest.raises(ValueError, match="streams chunks of 3 frames, got 2"):
        cache.attended_frames(2)


def test_rolling_eviction_of_other_sizes_overwrites_the_sink() -> None:
    cache = _cache(9, window=9, sink=3, rolling=True)
    for chunk in ((1, 2), (3, 4), (5, 6), (7, 8)):
        _append(cache, *chunk)
    # 8 stored + 2 new > 9: one frame (4) had to go, != sink size -> sink[:1] overwritten by it
    assert _keys(cache, 9, 10) == [4, 2, 3, 5, 6, 7, 8, 9, 10]
    _append(cache, 9, 10)
    # 9 stored + 2 next > 9: (5, 6) go and overwrite sink[:2]
    assert cache.keys[0].flatten()[: cache.length_frames].tolist() == [5, 6, 3, 7, 8, 9, 10]
    assert _keys(cache, 11, 12) == [5, 6, 3, 7, 8, 9, 10, 11, 12]


def test_window_smaller_than_capacity_keeps_sink_and_recent_frames_without_eviction() -> None:
    # RF training geometry: 21-frame cache (no eviction, no EMA), attention = sink 3 + last 6 frames
    cache = _cache(21, window=9, sink=3, rolling=False)
    for c in range(4):
        _append(cache, *(3 * c + i for i in range(3)))
    assert cache.attended_frames(3) == 9
    assert _keys(cache, 12, 13, 14) == [0, 1, 2, 9, 10, 11, 12, 13, 14]
    _append(cache, 12, 13, 14)
    assert cache.keys[0].flatten()[:15].tolist() == list(range(15))  # nothing evicted or averaged


def test_allocation_errors_name_the_bad_value() -> None:
    with pytest.raises(ValueError, match="sink_frames=9"):
        _cache(9, window=9, sink=9, rolling=True)
    with pytest.raises(ValueError, match="needs a local window"):
        _cache(9, window=-1, sink=3, rolling=False)
    with pytest.raises(ValueError, match="cannot fit"):
        _cache(6, window=6, sink=3, rolling=True).attended_frames(7)


def test_long_rolling_stream_keeps_memory_and_rope_positions_bounded(
    causal_wan: CausalWanTransformer, text_emb: torch.Tensor
) -> None:
    """30 chunks = 90 frames > rope_max_seq_len=64: only relative positions over [sink ++ window] work."""
    den = CausalDenoiser(causal_wan, frames_per_block=3, local_attn_frames=9, sink_frames=3)
    cache = den.new_cache(1, 90, (8, 8), rolling=True, dtype=torch.float32, device="cpu")
    nbytes, ptrs = cache.nbytes(), [k.data_ptr() for k in cache.keys]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for c in range(30):
            assert cache.attended_frames(3) <= 9
            x0 = torch.randn(1, 3, 16, 8, 8, generator=gen)
            out = den.predict_x0(x0, torch.full((1, 3), 500.0), text_emb, cache, 3 * c)
            assert torch.isfinite(out).all()
            den.write_context(x0, text_emb, cache, 3 * c)
    # the 9-frame window less the room of the next 3-frame chunk (evicted when the last chunk was stored)
    assert cache.frames_written == 90 and cache.length_frames == 6
    assert cache.nbytes() == nbytes and [k.data_ptr() for k in cache.keys] == ptrs
    # absolute positions would not fit the 64-entry table
    den_full = CausalDenoiser(causal_wan, frames_per_block=3)
    full = den_full.new_cache(1, 90, (8, 8), rolling=False, dtype=torch.float32, device="cpu")
    full.length_frames = full.frames_written = 63
    with pytest.raises(ValueError, match="rope_max_seq_len"):
        den_full.predict_x0(x0, torch.full((1, 3), 500.0), text_emb, full, 63)


@pytest.mark.parametrize(("alpha", "sink_chunk"), [(1.0, 0), (0.0, 1)])
def test_rolling_chunk_attends_sink_plus_window_with_relative_rope(
    text_emb: torch.Tensor, alpha: float, sink_chunk: int
) -> None:
    """Exact geometry check on a 1-layer model (its K/V depend only on each token's own input).

    After 3 chunks in a 9-frame rolling cache (sink 3), chunk 3 evicts chunk 1: with alpha = 1 the sink
    stays chunk 0, with alpha = 0 it becomes chunk 1. Chunk 3 must see exactly [sink, chunk 2, chunk 3]
    at RoPE positions 0..8, i.e. the masked full-sequence forward over that concatenation.
    """
    from .conftest import TINY_WAN

    torch.manual_seed(3)
    one = CausalWanTransformer(**{**TINY_WAN, "num_layers": 1}).eval()
    roll = CausalDenoiser(one, frames_per_block=3, local_attn_frames=9, sink_frames=3, sink_ema_alpha=alpha)
    gen = torch.Generator().manual_seed(4)
    clean = [torch.randn(1, 3, 16, 8, 8, generator=gen) for _ in range(3)]
    x_t = torch.randn(1, 3, 16, 8, 8, generator=gen)
    t = torch.full((1, 3), 833.33)
    cache = roll.new_cache(1, 12, (8, 8), rolling=True, dtype=torch.float32, device="cpu")
    with torch.no_grad():
        for c, x0 in enumerate(clean):
            roll.write_context(x0, text_emb, cache, 3 * c)
        got = roll.predict_x0(x_t, t, text_emb, cache, 9)
        ref = roll.forward_full(
            torch.cat([clean[sink_chunk], clean[2], x_t], dim=1), torch.cat([torch.zeros(1, 6), t], dim=1), text_emb
        )[:, 6:]
        # and it is not the full-history answer
        full = roll.forward_full(torch.cat([*clean, x_t], dim=1), torch.cat([torch.zeros(1, 9), t], dim=1), text_emb)
    assert (got - ref).abs().max().item() <= 1e-5
    assert (got - full[:, 9:]).abs().max().item() > 1e-3


@pytest.mark.parametrize(("rolling", "gib"), [(False, 6.03), (True, 2.59)])
def test_full_size_cache_memory_matches_the_spec(rolling: bool, gib: float) -> None:
    """1.3B student at 480x832 (60x104 latents, 1560 tokens/frame): 30 layers x K,V x 21 frames bf16
    = 6.0 GB full cache (docs/method.md §1.7); the rolling inference cache holds 9 frames. Allocated on meta."""
    cache = KVCache.allocate(
        num_layers=30,
        batch_size=1,
        capacity_frames=9 if rolling else 21,
        tokens_per_frame=30 * 52,
        heads=12,
        head_dim=128,
        window_frames=9 if rolling else -1,
        sink_frames=3 if rolling else 0,
        rolling=rolling,
        dtype=torch.bfloat16,
        device="meta",
    )
    assert cache.nbytes() / 1e9 == pytest.approx(gib, abs=0.01)


@pytest.mark.parametrize(("capacity", "rolling"), [(9, True), (18, False)])
def test_rotated_reads_equal_rotating_the_plain_read(capacity: int, rolling: bool) -> None:
    """``attended_rotated`` (streaming: rotated stored keys kept per chunk, no cat) == rotate(attended()).

    Rolling: the window is the whole cache (EMA sink evictions included); non-rolling with a 9-frame window
    over 18 frames: the sink ++ recent cut. Several reads per chunk (the denoising steps), then the store.
    """
    from stream_r1.models.rope import FrameRope, apply_rope

    tpf, heads, dim = 2, 2, 16
    cache = KVCache.allocate(num_layers=2, batch_size=1, capacity_frames=capacity, tokens_per_frame=tpf, heads=heads,
                             head_dim=dim, window_frames=9, sink_frames=3, rolling=rolling)
    rope_of = FrameRope(dim, 64)
    g = torch.Generator().manual_seed(0)
    for _chunk in range(5):
        n = cache.attended_frames(3)
        rope = rope_of.freqs(0, n, 1, tpf, torch.device("cpu"))
        for layer in range(2):
            stored = cache.length_frames * tpf
            before = cache.keys[layer][:, :stored].clone(), cache.values[layer][:, :stored].clone()
            for _step in range(3):
                new_k, new_v = (torch.randn(1, 3 * tpf, heads, dim, generator=g) for _ in range(2))
                k, v = cache.attended(layer, new_k, new_v)
                rk, rv = cache.attended_rotated(layer, new_k, new_v, rope)
                assert torch.equal(rk, apply_rope(k, rope)) and torch.equal(rv, v)
            assert torch.equal(cache.keys[layer][:, :stored], before[0])  # stored rows untouched by reads
            assert torch.equal(cache.values[layer][:, :stored], before[1])
            cache.store(layer, new_k, new_v)
        cache.advance(3)
    # a write outside store() (here: into the stored keys) is seen by the next read
    cache.keys[0][:, :tpf] += 1.0
    new_k, new_v = (torch.randn(1, 3 * tpf, heads, dim, generator=g) for _ in range(2))
    rope = rope_of.freqs(0, cache.attended_frames(3), 1, tpf, torch.device("cpu"))
    assert torch.equal(cache.attended_rotated(0, new_k, new_v, rope)[0],
                       apply_rope(cache.attended(0, new_k, new_v)[0], rope))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_written_into_a_destination_equals_the_returned_rotation(dtype: torch.dtype) -> None:
    """``apply_rope(x, rope, out=dest)`` writes the same bits ``apply_rope(x, rope)`` returns, into a
    contiguous destination (float32: straight from the complex multiply) and a strided one (copied)."""
    from stream_r1.models.rope import FrameRope, apply_rope

    rope = FrameRope(16, 64).freqs(2, 3, 2, 2, torch.device("cpu"))  # 12 tokens
    x = torch.randn(2, 12, 2, 16, generator=torch.Generator().manual_seed(5)).to(dtype)
    want = apply_rope(x, rope)
    dest = torch.zeros(2, 12, 2, 16, dtype=dtype)
    assert apply_rope(x, rope, out=dest) is dest and torch.equal(dest, want)
    wide = torch.zeros(2, 20, 2, 16, dtype=dtype)  # rows 4..15 of each batch entry: not contiguous
    apply_rope(x, rope, out=wide[:, 4:16])
    assert torch.equal(wide[:, 4:16], want) and not wide[:, :4].any() and not wide[:, 16:].any()
