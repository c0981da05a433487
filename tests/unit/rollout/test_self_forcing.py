"""Self-Forcing training rollout (docs/method.md §1.3, §5 items 6-8) on a tiny real causal student."""

from __future__ import annotations

import pytest
import torch

from stream_r1.config.schema import RolloutConfig
from stream_r1.diffusion import add_noise
from stream_r1.models.causal_wan import CausalWanTransformer
from stream_r1.models.denoiser import CausalDenoiser
from stream_r1.models.tiny import TINY_TEXT_DIM, TINY_TEXT_LEN, build_tiny_transformer
from stream_r1.rollout.self_forcing import self_forcing_rollout, student_timesteps

CFG = RolloutConfig(num_frames=6, latent_height=4, latent_width=4)
CHUNK = (1, 3, 16, 4, 4)


@pytest.fixture(scope="module")
def student() -> CausalDenoiser:
    stock = build_tiny_transformer(0)
    model = CausalWanTransformer.from_config(stock.config)
    model.load_state_dict(stock.state_dict(), strict=True)
    return CausalDenoiser(model.eval(), shift=5.0, frames_per_block=3)


@pytest.fixture(scope="module")
def text_emb() -> torch.Tensor:
    return torch.randn(1, TINY_TEXT_LEN, TINY_TEXT_DIM, generator=torch.Generator().manual_seed(3))


def _rollout(student, text_emb, k, seed=0, grad=True):
    return self_forcing_rollout(
        student,
        text_emb,
        CFG,
        frames_per_block=3,
        exit_step=k,
        rng=torch.Generator().manual_seed(seed),
        grad_enabled=grad,
    )


def test_warped_student_steps() -> None:
    assert student_timesteps(CFG) == pytest.approx([1000.0, 937.5, 833.3333, 625.0], abs=1e-3)


def test_exactly_one_grad_forward_per_chunk(student, text_emb) -> None:
    grad_flags: list[bool] = []
    handle = student.transformer.register_forward_hook(lambda *_: grad_flags.append(torch.is_grad_enabled()))
    try:
        x, info = _rollout(student, text_emb, 2)
    finally:
        handle.remove()
    # 2 chunks x (2 no-grad steps + 1 exit step) + 1 context pass between the chunks.
    assert len(grad_flags) == info.num_forwards == 7
    assert sum(grad_flags) == info.num_grad_forwards == 2
    assert info.exit_steps == (2, 2) and info.exit_step == 2 and info.num_blocks == 2
    assert info.exit_timesteps[0] == pytest.approx(833.333, abs=1e-3)
    assert x.shape == (1, 6, 16, 4, 4) and x.requires_grad
    x.pow(2).mean().backward()
    assert all(p.grad is not None for p in student.transformer.parameters() if p.requires_grad)
    student.transformer.zero_grad(set_to_none=True)


def test_first_chunk_matches_manual_exit_step_walk(student, text_emb) -> None:
    x, _ = _rollout(student, text_emb, 1, seed=5, grad=False)
    rng = torch.Generator().manual_seed(5)
    noise = torch.randn(1, 6, 16, 4, 4, generator=rng)
    steps = student_timesteps(CFG)
    cache = student.new_cache(1, 6, (4, 4), rolling=False, dtype=torch.float32, device=torch.device("cpu"))
    with torch.no_grad():
        x0 = student.predict_x0(noise[:, :3], torch.full((1, 3), steps[0]), text_emb, cache, 0)
        eps = torch.randn(CHUNK, generator=rng)  # fresh noise, not the initial draw (§1.3)
        x1 = add_noise(x0, eps, torch.full((1, 3), steps[1]), 5.0)
        expected = student.predict_x0(x1, torch.full((1, 3), steps[1]), text_emb, cache, 0)
    torch.testing.assert_close(x[:, :3], expected)


def test_deterministic_and_exit_step_changes_output(student, text_emb) -> None:
    a, _ = _rollout(student, text_emb, 1, seed=1, grad=False)
    b, _ = _rollout(student, text_emb, 1, seed=1, grad=False)
    c, _ = _rollout(student, text_emb, 3, seed=1, grad=False)
    d, _ = _rollout(student, text_emb, 1, seed=2, grad=False)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c) and not torch.allclose(a, d)


def test_no_grad_variant_and_per_chunk_exit_steps(student, text_emb) -> None:
    x, info = self_forcing_rollout(
        student,
        text_emb,
        CFG,
        frames_per_block=3,
        exit_step=[0, 3],
        rng=torch.Generator().manual_seed(0),
        grad_enabled=False,
    )
    assert not x.requires_grad and info.num_grad_forwards == 0
    assert info.exit_steps == (0, 3) and info.num_forwards == 1 + 1 + 4


def test_bad_exit_steps_and_frame_counts_are_rejected(student, text_emb) -> None:
    with pytest.raises(ValueError, match=r"exit_step \[4\] outside \[0, 3\]"):
        _rollout(student, text_emb, 4)
    with pytest.raises(ValueError, match="one per chunk"):
        self_forcing_rollout(student, text_emb, CFG, frames_per_block=3, exit_step=[1], rng=torch.Generator())
    with pytest.raises(ValueError, match=r"not a positive multiple of model\.frames_per_block=4"):
        self_forcing_rollout(student, text_emb, CFG, frames_per_block=4, exit_step=0, rng=torch.Generator())


def test_grad_forward_reads_but_never_writes_the_cache(student, text_emb) -> None:
    cache = student.new_cache(1, 6, (4, 4), rolling=False, dtype=torch.float32, device=torch.device("cpu"))
    clean = torch.randn(CHUNK, generator=torch.Generator().manual_seed(4))
    student.write_context(clean, text_emb, cache, 0, t_context=0.0)
    before = [k.clone() for k in cache.keys] + [v.clone() for v in cache.values]
    length = cache.length_frames
    x_t = torch.randn(CHUNK, generator=torch.Generator().manual_seed(6))
    x0 = student.predict_x0(x_t, torch.full((1, 3), 625.0), text_emb, cache, 3)
    x0.sum().backward()
    after = [*cache.keys, *cache.values]
    assert cache.length_frames == length
    assert all(torch.equal(a, b) and not a.requires_grad for a, b in zip(after, before, strict=True))
    student.transformer.zero_grad(set_to_none=True)


def test_gradient_checkpointing_replays_see_the_same_cache(text_emb) -> None:
    # Replays run during backward, after later chunks advanced the cache: they must attend to the same
    # frames as the original forward (docs/method.md §5 item 7), so gradients match the plain run exactly.
    cfg = RolloutConfig(num_frames=9, latent_height=4, latent_width=4)
    grads = []
    for checkpointing in (False, True):
        stock = build_tiny_transformer(0)
        model = CausalWanTransformer.from_config(stock.config)
        model.load_state_dict(stock.state_dict(), strict=True)
        if checkpointing:
            model.enable_gradient_checkpointing()
        model.train()
        x, _ = self_forcing_rollout(
            CausalDenoiser(model, shift=5.0, frames_per_block=3),
            text_emb,
            cfg,
            frames_per_block=3,
            exit_step=1,
            rng=torch.Generator().manual_seed(1),
        )
        (x**2).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=0)


def _manual_one_step_rollout(student, text_emb, cfg, seed, noised_context: bool) -> torch.Tensor:
    """Exit step 0 in every chunk, walked by hand: the context pass sees x0 noised to cfg.context_noise
    (``noised_context``, Self-Forcing's training pipeline) or the clean x0 labelled with it."""
    rng = torch.Generator().manual_seed(seed)
    t0 = student_timesteps(cfg)[0]
    noise = torch.randn((1, cfg.num_frames, 16, 4, 4), generator=rng)
    cache = student.new_cache(1, cfg.num_frames, (4, 4), rolling=False, dtype=torch.float32, device="cpu")
    out = []
    with torch.no_grad():
        for start in range(0, cfg.num_frames, 3):
            x0 = student.predict_x0(noise[:, start:start + 3], torch.full((1, 3), t0), text_emb, cache, start)
            out.append(x0)
            if start + 3 < cfg.num_frames:
                t_ctx = torch.full((1, 3), float(cfg.context_noise))
                eps = torch.randn(CHUNK, generator=rng)
                x_ctx = add_noise(x0, eps, t_ctx, cfg.student_sigma_shift) if noised_context else x0
                student.write_context(x_ctx, text_emb, cache, start, t_context=float(cfg.context_noise))
    return torch.cat(out, dim=1)


def test_context_noise_noises_the_context_input_to_its_level(student, text_emb) -> None:
    cfg = RolloutConfig(num_frames=9, latent_height=4, latent_width=4, context_noise=500)
    x, _ = self_forcing_rollout(student, text_emb, cfg, frames_per_block=3, exit_step=0,
                                rng=torch.Generator().manual_seed(9), grad_enabled=False)
    noised = _manual_one_step_rollout(student, text_emb, cfg, 9, noised_context=True)
    clean = _manual_one_step_rollout(student, text_emb, cfg, 9, noised_context=False)
    # Same operations in the same order as the manual walk: equal up to float32 reassociation (none here).
    torch.testing.assert_close(x, noised, rtol=0, atol=1e-6)
    # The first chunk attends to no context; later chunks read a different cache under the two semantics.
    torch.testing.assert_close(x[:, :3], clean[:, :3], rtol=0, atol=1e-6)
    assert (x[:, 3:] - clean[:, 3:]).abs().max() > 1e-3


def test_zero_context_noise_caches_the_clean_output_and_draws_nothing(student, text_emb) -> None:
    cfg = RolloutConfig(num_frames=9, latent_height=4, latent_width=4, context_noise=0)
    rng = torch.Generator().manual_seed(9)
    x, _ = self_forcing_rollout(student, text_emb, cfg, frames_per_block=3, exit_step=0, rng=rng, grad_enabled=False)
    replay = torch.Generator().manual_seed(9)
    torch.randn((1, 9, 16, 4, 4), generator=replay)  # the initial noise: the only draw of a one-step rollout
    assert torch.equal(rng.get_state(), replay.get_state())
    clean = _manual_one_step_rollout(student, text_emb, cfg, 9, noised_context=False)
    torch.testing.assert_close(x, clean, rtol=0, atol=1e-6)


def test_training_rollouts_never_use_the_conditioning_memo(text_emb) -> None:
    """Two training steps: every rollout forward runs on a cache without a conditioning memo, and the
    rollout after an optimizer step (written as FSDP2 writes its gathered parameters, version counters
    kept) equals the rollout of a fresh copy of the updated model bit for bit, so no conditioning
    computed with the old weights can reach it."""
    import copy

    stock = build_tiny_transformer(0)
    model = CausalWanTransformer.from_config(stock.config)
    model.load_state_dict(stock.state_dict(), strict=True)
    student = CausalDenoiser(model.train(), shift=5.0, frames_per_block=3)
    caches: list[object] = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: caches.append(kw.get("kv_cache")), with_kwargs=True)
    for _ in range(2):  # rollout, backward, an SGD step that keeps the parameters' version counters
        x, info = _rollout(student, text_emb, 1, seed=2)
        x.pow(2).mean().backward()
        with torch.no_grad():
            for p in model.parameters():
                with torch.autograd._unsafe_preserve_version_counter(p):
                    p.sub_(0.5 * p.grad)
        model.zero_grad(set_to_none=True)
    hook.remove()
    assert len(caches) == 2 * info.num_forwards and all(c is not None and c.conditions is None for c in caches)
    with torch.no_grad():
        got, _ = _rollout(student, text_emb, 1, seed=2, grad=False)
        fresh = CausalDenoiser(copy.deepcopy(model), shift=5.0, frames_per_block=3)
        want, _ = _rollout(fresh, text_emb, 1, seed=2, grad=False)
    assert torch.equal(got, want)
