"""Critic flow-matching loss (docs/method.md §1.5)."""

from __future__ import annotations

import torch

from stream_r1.diffusion import add_noise, lookup_sigma, sample_dmd_timesteps
from stream_r1.losses import critic_flow_loss

SHAPE = (2, 3, 4, 2, 2)


def test_perfect_critic_has_zero_loss() -> None:
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    # x0_hat = x gives v_hat = (x_t - x)/sigma = eps - x exactly: the flow target (not x - eps).
    loss, terms = critic_flow_loss(x, lambda x_t, t: x.clone(), torch.Generator().manual_seed(1))
    assert float(loss) < 1e-10
    assert terms.x0_mse == 0.0
    assert ((terms.t >= 20) & (terms.t <= 980)).all()


def test_loss_matches_formula_and_trains_only_the_critic() -> None:
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    scale = torch.nn.Parameter(torch.tensor(0.7))

    def critic_x0(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return scale * x_t

    loss, _ = critic_flow_loss(x, critic_x0, torch.Generator().manual_seed(5))
    replay = torch.Generator().manual_seed(5)
    t = sample_dmd_timesteps(SHAPE[0], replay)
    eps = torch.randn(SHAPE, generator=replay)
    x_t = add_noise(x.detach(), eps, t, 5.0).double()
    sigma = lookup_sigma(t, 5.0).view(-1, 1, 1, 1, 1)
    v_hat = (x_t - 0.7 * x_t) / sigma
    expected = ((v_hat - (eps.double() - x.detach().double())) ** 2).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    loss.backward()
    assert scale.grad is not None and x.grad is None
