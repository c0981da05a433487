"""Streaming inference rollout: determinism, equality with a masked full-sequence re-computation, rolling."""

from __future__ import annotations

import pytest
import torch

from stream_r1.diffusion import add_noise, add_noise_sigma, lookup_sigma, warped_timesteps
from stream_r1.models.causal_wan import CausalWanTransformer
from stream_r1.models.denoiser import CausalDenoiser
from stream_r1.models.tiny import TINY_STUDENT
from stream_r1.rollout.streaming import StreamChunk, stream_chunks

TINY = TINY_STUDENT  # docs/method.md §6.1, the same tiny student make-tiny-checkpoints writes
SHAPE = (16, 8, 8)
STEPS = warped_timesteps([1000, 750, 500, 250], 5.0)


@pytest.fixture(scope="module")
def student() -> CausalWanTransformer:
    torch.manual_seed(0)
    return CausalWanTransformer(**TINY).eval()


@pytest.fixture(scope="module")
def text() -> torch.Tensor:
    return torch.randn(1, 7, 32, generator=torch.Generator().manual_seed(1))


def _run(
    den: CausalDenoiser, text: torch.Tensor, frames: int, seed: int, rolling: bool, steps: list[float] = STEPS
) -> list[StreamChunk]:
    gen = torch.Generator().manual_seed(seed)
    return list(
        stream_chunks(
            den, text, num_frames=frames, latent_shape=SHAPE, timesteps=steps, rng=gen, rolling=rolling
        )
    )


def test_deterministic_given_the_generator(student: CausalWanTransformer, text: torch.Tensor) -> None:
    den = CausalDenoiser(student, frames_per_block=3)
    a, b, c = _run(den, text, 6, 7, False), _run(den, text, 6, 7, False), _run(den, text, 6, 8, False)
    assert [ch.frame_offset for ch in a] == [0, 3]
    assert all(ch.x0.shape == (1, 3, *SHAPE) and ch.latency_ms > 0 for ch in a)
    assert all(torch.equal(x.x0, y.x0) for x, y in zip(a, b, strict=True))
    assert not torch.allclose(a[0].x0, c[0].x0)
    assert torch.is_grad_enabled()  # the generator does not leak no_grad to the caller


def test_full_cache_rollout_equals_masked_full_sequence_recomputation(
    student: CausalWanTransformer, text: torch.Tensor
) -> None:
    """Teacher-forced on its own outputs, the masked full-sequence forward reproduces every chunk."""
    den = CausalDenoiser(student, frames_per_block=3)
    chunks = _run(den, text, 6, 3, False)
    gen = torch.Generator().manual_seed(3)
    done: list[torch.Tensor] = []
    with torch.no_grad():
        for chunk in chunks:
            x = torch.randn(1, 3, *SHAPE, generator=gen)
            for i, t in enumerate(STEPS):
                seq = torch.cat([*done, x], dim=1)
                t_seq = torch.cat([torch.zeros(1, 3 * len(done)), torch.full((1, 3), t)], dim=1)
                x0 = den.forward_full(seq, t_seq, text)[:, -3:]
                if i + 1 < len(STEPS):
                    x = add_noise(x0, torch.randn(1, 3, *SHAPE, generator=gen), torch.full((1, 3), STEPS[i + 1]), 5.0)
            diff = (x0 - chunk.x0).abs().max().item()
            assert diff <= 1e-5, (chunk.index, diff)
            done.append(x0)


def test_rolling_stream_beyond_rope_table_runs_and_matches_full_while_window_not_exceeded(
    student: CausalWanTransformer, text: torch.Tensor
) -> None:
    rolling = CausalDenoiser(student, frames_per_block=3, local_attn_frames=9, sink_frames=3)
    steps = STEPS[:2]  # the cache geometry is under test, not the sampler; keep it cheap
    long = _run(rolling, text, 66, 5, True, steps)  # 66 frames > rope_max_seq_len=64: relative RoPE only
    assert len(long) == 22 and all(torch.isfinite(c.x0).all() for c in long)
    # within the first 9 frames the windowed geometry equals the full cache
    full = _run(CausalDenoiser(student, frames_per_block=3), text, 9, 5, False, steps)
    for a, b in zip(long[:3], full, strict=True):
        assert (a.x0 - b.x0).abs().max().item() <= 1e-5
    # the 4th chunk attends to an EMA sink instead of the evicted chunk: a different model input
    more = _run(CausalDenoiser(student, frames_per_block=3), text, 12, 5, False, steps)
    assert not torch.allclose(long[3].x0, more[3].x0, atol=1e-6)


def test_bad_arguments_fail_before_model_work(student: CausalWanTransformer, text: torch.Tensor) -> None:
    den = CausalDenoiser(student, frames_per_block=3)
    gen = torch.Generator()
    kw = dict(latent_shape=SHAPE, timesteps=STEPS, rng=gen, rolling=False)
    with pytest.raises(ValueError, match="use 6 or 9"):
        stream_chunks(den, text, num_frames=7, **kw)
    with pytest.raises(ValueError, match="latent_shape"):
        stream_chunks(den, text, num_frames=6, **{**kw, "latent_shape": (4, 8, 8)})
    with pytest.raises(ValueError, match="timesteps is empty"):
        stream_chunks(den, text, num_frames=6, **{**kw, "timesteps": []})
    with pytest.raises(ValueError, match="rolling=True"):
        stream_chunks(den, text, num_frames=6, **{**kw, "rolling": True})
    with pytest.raises(ValueError, match="absolute RoPE table"):
        stream_chunks(den, text, num_frames=66, **kw)


def test_bfloat16_stream_runs(student: CausalWanTransformer, text: torch.Tensor) -> None:
    bf16 = CausalWanTransformer(**TINY).eval()
    bf16.load_state_dict(student.state_dict())
    den = CausalDenoiser(bf16.to(torch.bfloat16), frames_per_block=3, local_attn_frames=6, sink_frames=3)
    gen = torch.Generator().manual_seed(0)
    chunks = list(
        stream_chunks(
            den, text, num_frames=9, latent_shape=SHAPE, timesteps=STEPS[:2], rng=gen, rolling=True
        )
    )
    assert [c.x0.dtype for c in chunks] == [torch.bfloat16] * 3  # run dtype follows the model
    assert all(torch.isfinite(c.x0).all() for c in chunks)
    ref = _run(CausalDenoiser(student, frames_per_block=3, local_attn_frames=6, sink_frames=3), text, 9, 0, True,
               STEPS[:2])
    for a, b in zip(chunks, ref, strict=True):
        assert (a.x0.float() - b.x0).abs().max().item() < 0.1  # bf16 rounding only


def test_context_noise_noises_the_cached_context_as_in_training(student: CausalWanTransformer, text: torch.Tensor) -> None:
    """With rollout.context_noise > 0 the stream caches x0 noised to that level (one fp32 draw per chunk,
    after its denoising draws), the training rollout's semantics."""
    den = CausalDenoiser(student, shift=5.0, frames_per_block=3)
    steps = [1000.0]
    got = torch.cat([c.x0 for c in stream_chunks(den, text, num_frames=6, latent_shape=SHAPE, timesteps=steps,
                                                 rng=torch.Generator().manual_seed(4), rolling=False,
                                                 context_t=500.0)], dim=1)
    rng = torch.Generator().manual_seed(4)
    cache = den.new_cache(1, 6, SHAPE[1:], rolling=False, dtype=torch.float32, device="cpu")
    want = []
    with torch.no_grad():
        for start in (0, 3):
            x0 = den.predict_x0(torch.randn(1, 3, *SHAPE, generator=rng), torch.full((1, 3), 1000.0), text, cache, start)
            want.append(x0)
            x_ctx = add_noise(x0, torch.randn(1, 3, *SHAPE, generator=rng), torch.full((1, 3), 500.0), 5.0)
            den.write_context(x_ctx, text, cache, start, t_context=500.0)
    torch.testing.assert_close(got, torch.cat(want, dim=1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("rolling", [True, False], ids=["windowed", "full"])
def test_stream_embeds_each_timestep_once_and_equals_a_stream_without_the_memo(
    student: CausalWanTransformer, text: torch.Tensor, rolling: bool
) -> None:
    """The stream's conditioning memo embeds each of its timestep tensors once per stream, and the stream is
    bit for bit the same chunk loop on a cache without a memo (which embeds on every forward)."""
    window = dict(local_attn_frames=6, sink_frames=3) if rolling else {}
    den = CausalDenoiser(student, frames_per_block=3, **window)
    frames = 15 if rolling else 9  # windowed: past the window, with EMA-sink evictions
    calls: list[int] = []
    hook = student.condition_embedder.register_forward_hook(lambda *_: calls.append(1))
    got = [c.x0 for c in _run(den, text, frames, 9, rolling)]
    assert len(calls) == len(STEPS) + 1  # one per timestep tensor (steps + context pass), not per chunk
    calls.clear()
    rng = torch.Generator().manual_seed(9)
    cache = den.new_cache(1, frames, SHAPE[1:], rolling=rolling, dtype=torch.float32, device="cpu")
    assert cache.conditions is None
    noise = torch.empty(1, 3, *SHAPE)
    want = []
    with torch.no_grad():
        for start in range(0, frames, 3):  # _generate's draws and arithmetic, new timestep tensors every call
            x = noise.normal_(generator=rng).clone()
            for i, t in enumerate(STEPS):
                x0 = den.predict_x0(x, torch.full((1, 3), t), text, cache, start)
                if i + 1 < len(STEPS):
                    sigma = lookup_sigma(torch.full((1, 3), STEPS[i + 1]), den.shift)
                    x = add_noise_sigma(x0, noise.normal_(generator=rng), sigma)
            den.write_context(x0, text, cache, start, t_context=0.0)
            want.append(x0)
    hook.remove()
    assert len(calls) == (len(STEPS) + 1) * (frames // 3)
    assert len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
