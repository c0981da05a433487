"""ODE initialisation math: Euler grid, CFG trajectory, per-block regression inputs and loss (docs/method.md §1.9)."""

from __future__ import annotations

import torch

from stream_r1.config.schema import ODEConfig
from stream_r1.models.causal_wan import CausalWanTransformer
from stream_r1.models.denoiser import BidirectionalDenoiser, CausalDenoiser
from stream_r1.models.tiny import TINY_STUDENT, TINY_TEXT_DIM, build_tiny_transformer
from stream_r1.train.ode_pairs import euler_sigmas, stored_timesteps, teacher_trajectory
from stream_r1.train.ode_regression import regression_inputs, regression_loss


def test_reference_stored_timesteps():
    t = stored_timesteps(ODEConfig())  # 48 steps, shift 8, indices [0, 12, 24, 36, 48]
    assert [round(x, 1) for x in t] == [1000.0, 960.0, 888.9, 727.3, 0.0]
    sig = euler_sigmas(48, 8.0)
    assert sig[0] == 1.0 and sig[-1] == 0.0 and bool((sig[1:] < sig[:-1]).all())


def test_trajectory_cfg_and_states():
    teacher = BidirectionalDenoiser(build_tiny_transformer(1, teacher=True), shift=8.0)
    cfg = ODEConfig(num_inference_steps=4, stored_indices=(0, 1, 2, 3, 4), guidance_scale=6.0)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 3, 16, 4, 4, generator=g)
    cond, neg = torch.randn(1, 16, TINY_TEXT_DIM, generator=g), torch.randn(1, 16, TINY_TEXT_DIM, generator=g)
    states = teacher_trajectory(teacher, noise, cond, neg, cfg)
    assert states.shape == (1, 5, 3, 16, 4, 4)
    torch.testing.assert_close(states[:, 0], noise)
    # one manual Euler step with x0-space CFG: x0 = x0_u + 6 (x0_c - x0_u); v = (x - x0) / sigma
    sig = euler_sigmas(4, 8.0)
    t0 = torch.full((1,), 1000.0 * float(sig[0]))
    x0_c = noise - float(sig[0]) * teacher.predict_flow(noise, t0, cond)
    x0_u = noise - float(sig[0]) * teacher.predict_flow(noise, t0, neg)
    x0 = x0_u + 6.0 * (x0_c - x0_u)
    v = (noise - x0) / float(sig[0])
    torch.testing.assert_close(states[:, 1], noise + (float(sig[1]) - float(sig[0])) * v, rtol=1e-4, atol=1e-5)


def test_regression_inputs_per_block():
    b, s, f = 3, 5, 6
    states = torch.arange(s, dtype=torch.float32)[None, :, None, None, None, None].expand(b, s, f, 2, 1, 1).clone()
    timesteps = [1000.0, 960.0, 888.9, 727.3, 0.0]
    x_t, t, target = regression_inputs(states, timesteps, 3, torch.Generator().manual_seed(0))
    level = x_t[:, :, 0, 0, 0]  # which state each frame came from
    assert bool((level[:, :3] == level[:, :1]).all() and (level[:, 3:] == level[:, 3:4]).all())  # per block
    assert bool((level < 4).all())  # never the clean state
    assert torch.equal(t, torch.tensor(timesteps)[level.long()])
    assert bool((target == 4).all())


def test_regression_loss_matches_manual_and_masks_clean_frames():
    tr = CausalWanTransformer(**TINY_STUDENT)
    student = CausalDenoiser(tr, frames_per_block=3)
    g = torch.Generator().manual_seed(1)
    x_t, target = torch.randn(1, 6, 16, 4, 4, generator=g), torch.randn(1, 6, 16, 4, 4, generator=g)
    emb = torch.randn(1, 16, TINY_TEXT_DIM, generator=g)
    t = torch.tensor([[960.0] * 3 + [0.0] * 3])
    loss = regression_loss(student, x_t, t, emb, target)
    pred = student.forward_full(x_t, t, emb)
    torch.testing.assert_close(loss, ((pred[:, :3] - target[:, :3]) ** 2).mean())
    loss.backward()
    assert all(p.grad is not None for p in tr.parameters() if p.requires_grad)
