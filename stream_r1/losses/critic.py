"""Critic (fake score) flow-matching loss (docs/method.md §1.5, Self-Forcing ``model/dmd.py``, ``utils/loss.py``).

The critic learns the score of the generator's current distribution on a separate no-grad
rollout ``x``: ``x_t = add_noise(x, eps, t)``, ``x0_hat = critic(x_t, t)`` with grad,
``v_hat = (x_t - x0_hat) / sigma`` and the flow target ``eps - x`` (``denoising_loss_type: flow``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from stream_r1.diffusion import add_noise, flow_from_x0, sample_dmd_timesteps
from stream_r1.losses.dmd import ScoreFn


@dataclass(frozen=True)
class CriticLossTerms:
    """Detached by-products of the critic loss, for logging.

    Attributes:
        t: timesteps float64 ``[B]``.
        x0_mse: ``mean((x0_hat - x)^2)`` (the un-weighted x0 error), float.
    """

    t: Tensor
    x0_mse: float


def critic_flow_loss(
    x: Tensor,
    critic_score: ScoreFn,
    rng: torch.Generator,
    *,
    sigma_shift: float = 5.0,
    sampling_shift: float = 5.0,
    min_step: int = 20,
    max_step: int = 980,
) -> tuple[Tensor, CriticLossTerms]:
    """``mean((v_hat - (eps - x))^2)`` with ``v_hat = (x_t - critic(x_t, t)) / sigma`` (§1.5).

    Same t distribution as the DMD loss (U{0..999}, shift, clamp); draws from ``rng`` in
    this order: timesteps ``[B]``, noise ``[B, F, C, H, W]``.

    Args:
        x: generator rollout ``[B, F, C, H, W]`` (detached: the critic step trains the critic only).
        critic_score: critic x0 score ``(x_t, t) -> x0`` evaluated with grad.
        rng: torch RNG for t and noise.
        sigma_shift: sigma-table shift for noising and the x0 -> flow conversion (the student's table).
        sampling_shift: shift applied to the raw uniform timestep (dmd.timestep_sampling_shift).
        min_step: lower clamp of t.
        max_step: upper clamp of t.

    Returns:
        ``(loss, terms)``: float64 scalar loss (gradient reaches the critic only) and :class:`CriticLossTerms`.

    Raises:
        ValueError: ``x`` is not a 5-D latent video.
    """
    if x.dim() != 5:
        raise ValueError(f"x must be a latent video [B, F, C, H, W]; got shape {tuple(x.shape)}")
    x = x.detach()
    t = sample_dmd_timesteps(x.shape[0], rng, shift=sampling_shift, min_step=min_step, max_step=max_step)
    t = t.to(x.device)
    noise = torch.randn(x.shape, generator=rng, dtype=x.dtype, device=rng.device).to(x.device)
    x_t = add_noise(x, noise, t, sigma_shift)
    x0_hat = critic_score(x_t, t)
    # flow_from_x0 computes (x_t - x0)/sigma in float64 (table-quantised sigma, §1.2); target v = eps - x0 (§5 item 3).
    v_hat = flow_from_x0(x0_hat.to(torch.float64), x_t, t, sigma_shift)
    target = noise.to(torch.float64) - x.to(torch.float64)
    loss = ((v_hat - target) ** 2).mean()
    x0_mse = float(((x0_hat.detach().to(torch.float64) - x.to(torch.float64)) ** 2).mean())
    return loss, CriticLossTerms(t=t.to(torch.float64), x0_mse=x0_mse)
