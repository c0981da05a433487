"""Golden values of the flow-matching math (docs/method.md §1.2, §1.4)."""

from __future__ import annotations

import pytest
import torch

from stream_r1.diffusion import (
    add_noise,
    add_noise_sigma,
    flow_from_x0,
    lookup_sigma,
    sample_dmd_timesteps,
    sigma_table,
    warped_timesteps,
    x0_from_flow,
    x0_from_flow_sigma,
)


def test_warped_list_shift5():
    assert warped_timesteps([1000, 750, 500, 250], 5.0) == pytest.approx([1000.0, 937.5, 833.3333333, 625.0])


def test_warped_list_shift8_matches_ode_states():
    # The ODE trajectory states (indices 0,12,24,36 of 48, shift 8) sit at these t (§1.9).
    assert warped_timesteps([1000, 750, 500, 250], 8.0) == pytest.approx([1000.0, 960.0, 888.888889, 727.272727])


def test_sigma_table_endpoints():
    s, t = sigma_table(5.0)
    assert s.dtype == torch.float64 and s.shape == (1000,)
    assert s[0].item() == 1.0 and t[0].item() == 1000.0
    # last entry: sigma_lin = 0.001 -> 5*0.001/(1+4*0.001)
    assert s[-1].item() == pytest.approx(0.005 / 1.004)
    assert torch.all(s[:-1] > s[1:])


def test_nearest_lookup():
    assert lookup_sigma(torch.tensor([1000.0]), 5.0).item() == 1.0
    assert lookup_sigma(torch.tensor([937.5]), 5.0).item() == pytest.approx(0.9375)
    assert lookup_sigma(torch.tensor([[0.0, 1.0]]), 5.0).shape == (1, 2)


def test_noise_and_conversions_roundtrip():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 3, 4, 2, 2, generator=g, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([937.5, 625.0])
    xt = add_noise(x0, eps, t, 5.0)
    v = eps - x0
    assert torch.allclose(xt, (1 - torch.tensor([0.9375, 0.625]).view(2, 1, 1, 1, 1)) * x0
                          + torch.tensor([0.9375, 0.625]).view(2, 1, 1, 1, 1).double() * eps)
    assert torch.allclose(x0_from_flow(v, xt, t, 5.0), x0, atol=1e-12)
    assert torch.allclose(flow_from_x0(x0, xt, t, 5.0), v, atol=1e-12)


def test_per_frame_timesteps_broadcast():
    x0 = torch.zeros(1, 2, 1, 1, 1)
    eps = torch.ones_like(x0)
    xt = add_noise(x0, eps, torch.tensor([[1000.0, 625.0]]), 5.0)
    assert xt.flatten().tolist() == pytest.approx([1.0, 0.625])


def test_dmd_timestep_distribution():
    t = sample_dmd_timesteps(200_000, torch.Generator().manual_seed(0))
    assert t.min() >= 20 and t.max() <= 980
    assert t.median().item() == pytest.approx(833.3, abs=2.0)
    assert (t == 980).double().mean().item() == pytest.approx(0.092, abs=0.004)


def test_bad_step():
    with pytest.raises(ValueError, match="outside"):
        warped_timesteps([1001], 5.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_precomputed_sigma_paths_are_bit_identical_to_float64_copies(dtype):
    """The streaming fast path (sigma looked up once, no float64 input copies) rounds exactly like the formula."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 3, 4, 6, 6, generator=g) * 3).to(dtype)
    # the flow arrives permuted from the transformer's layout: non-contiguous inputs are part of the contract
    flow = torch.randn(2, 4, 3, 6, 6, generator=g).permute(0, 2, 1, 3, 4).to(dtype)
    t = torch.tensor([[1000.0, 937.5, 833.33], [625.0, 400.0, 12.5]])
    sigma = lookup_sigma(t, 5.0)
    s = sigma.view(2, 3, 1, 1, 1)
    want_noised = ((1 - s) * x.double() + s * flow.double()).to(dtype)
    want_x0 = (x.double() - s * flow.double()).to(dtype)
    assert torch.equal(add_noise_sigma(x, flow, sigma), want_noised)
    assert torch.equal(add_noise(x, flow, t, 5.0), want_noised)
    assert torch.equal(x0_from_flow_sigma(flow, x, sigma), want_x0)
    assert torch.equal(x0_from_flow(flow, x, t, 5.0), want_x0)
    # with a graph to record the result is built by other kernels (no out=): the same bits
    xg, fg = x.clone().requires_grad_(True), flow.clone().requires_grad_(True)
    assert torch.equal(add_noise_sigma(xg, fg, sigma), want_noised)
    assert torch.equal(x0_from_flow_sigma(fg, xg, sigma), want_x0)


def test_precomputed_sigma_paths_keep_gradients():
    sigma = lookup_sigma(torch.tensor([[1000.0, 625.0, 0.0]]), 5.0)
    s = sigma.view(1, 3, 1, 1, 1).float().expand(1, 3, 2, 2, 2)
    for fn, d_x, d_flow in ((x0_from_flow_sigma, 1.0, -s), (add_noise_sigma, 1 - s, s)):
        x = torch.randn(1, 3, 2, 2, 2, requires_grad=True)
        flow = torch.randn(1, 3, 2, 2, 2, requires_grad=True)
        out = fn(flow, x, sigma) if fn is x0_from_flow_sigma else fn(x, flow, sigma)
        out.sum().backward()
        torch.testing.assert_close(x.grad, torch.as_tensor(d_x).expand_as(x), rtol=0, atol=1e-6)
        torch.testing.assert_close(flow.grad, d_flow, rtol=0, atol=1e-6)
