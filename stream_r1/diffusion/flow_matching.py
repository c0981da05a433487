"""Rectified-flow math of Self-Forcing / Wan (docs/method.md §1.2). Pure functions, no nn.Module.

Convention: ``x_t = (1 - sigma) * x0 + sigma * eps``, network output ``v ~= eps - x0``,
``x0 = x_t - sigma * v``, timestep ``t = 1000 * sigma``. Every t -> sigma lookup is the nearest
entry of a 1000-entry shifted table, and conversions run in float64.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from stream_r1.config.schema import NUM_TRAIN_TIMESTEPS


def shift_sigma(sigma: Tensor | float, shift: float) -> Tensor | float:
    """Apply the flow-matching shift ``s * sigma / (1 + (s - 1) * sigma)``."""
    return shift * sigma / (1 + (shift - 1) * sigma)


@lru_cache(maxsize=16)
def _table(shift: float, num_train_timesteps: int) -> tuple[Tensor, Tensor]:
    lin = torch.linspace(1.0, 0.0, num_train_timesteps + 1, dtype=torch.float64)[:-1]
    sigmas = shift_sigma(lin, shift)
    return sigmas, sigmas * NUM_TRAIN_TIMESTEPS


def sigma_table(shift: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> tuple[Tensor, Tensor]:
    """The shifted sigma table and its timesteps (``FlowMatchScheduler(extra_one_step=True)``).

    Args:
        shift: sigma shift (5.0 for the generator, 8.0 for the teacher/critic wrappers).
        num_train_timesteps: table entries (1000).

    Returns:
        ``(sigmas, timesteps)``, each float64 ``[num_train_timesteps]``, decreasing from 1.0/1000.
    """
    sigmas, timesteps = _table(float(shift), int(num_train_timesteps))
    return sigmas.clone(), timesteps.clone()


def lookup_sigma(t: Tensor, shift: float, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> Tensor:
    """Nearest-entry sigma for each timestep in ``t`` (any shape), float64, same shape."""
    sigmas, timesteps = _table(float(shift), int(num_train_timesteps))
    flat = t.detach().to(torch.float64).reshape(-1, 1).cpu()
    idx = (flat - timesteps.reshape(1, -1)).abs().argmin(dim=1)
    return sigmas[idx].reshape(t.shape).to(t.device)


def warped_timesteps(steps: list[int], shift: float) -> list[float]:
    """Warp configured few-step timesteps through the shifted table (SF ``warp_denoising_step``).

    ``t_k = table_with_0[1000 - k]`` where ``table_with_0`` is the timestep table with a trailing 0.
    Shift 5 maps ``[1000, 750, 500, 250]`` to ``[1000, 937.5, 833.33, 625.0]``.

    Raises:
        ValueError: a step outside [0, 1000].
    """
    _, timesteps = _table(float(shift), NUM_TRAIN_TIMESTEPS)
    with_zero = torch.cat([timesteps, torch.zeros(1, dtype=torch.float64)])
    out = []
    for k in steps:
        if not 0 <= k <= NUM_TRAIN_TIMESTEPS:
            raise ValueError(f"denoising step {k} is outside [0, {NUM_TRAIN_TIMESTEPS}]")
        out.append(float(with_zero[NUM_TRAIN_TIMESTEPS - int(k)]))
    return out


def _bcast(sigma: Tensor, like: Tensor) -> Tensor:
    """Broadcast a per-sample ``[B]`` or per-frame ``[B, F]`` sigma over ``[B, F, C, H, W]``."""
    while sigma.dim() < like.dim():
        sigma = sigma.unsqueeze(-1)
    return sigma


def _tracked(*tensors: Tensor) -> bool:
    """Whether autograd records an operation on these tensors (``out=`` operations cannot be recorded)."""
    return torch.is_grad_enabled() and any(x.requires_grad for x in tensors)


def add_noise(x0: Tensor, noise: Tensor, t: Tensor, shift: float) -> Tensor:
    """``x_t = (1 - sigma) x0 + sigma eps`` with table-quantised sigma.

    Args:
        x0: clean latents ``[B, F, C, H, W]``.
        noise: Gaussian noise, same shape.
        t: timesteps ``[B]`` or ``[B, F]``.
        shift: table shift.

    Returns:
        Noisy latents in ``x0.dtype``.
    """
    return add_noise_sigma(x0, noise, lookup_sigma(t, shift))


def add_noise_sigma(x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
    """:func:`add_noise` with the table sigma already looked up (``[B]`` or ``[B, F]`` float64).

    The float64 ``sigma`` promotes each product to float64 inside its kernel (the latents are read as
    they are, converting exactly), so this is bit for bit ``(1 - sigma) * x0.double() + sigma *
    noise.double()`` without the float64 copies of the inputs. One kernel per operation: a fused
    multiply-add would round differently.
    """
    sigma = _bcast(sigma, x0)
    kept, added = torch.mul(x0, 1 - sigma), torch.mul(noise, sigma)
    if _tracked(x0, noise) or x0.shape != noise.shape:
        return kept.add_(added).to(x0.dtype)
    # No graph to record: the float64 sum is rounded once, straight into the output dtype (no float64 sum buffer).
    return torch.add(kept, added, out=torch.empty_like(x0))


def x0_from_flow(flow: Tensor, x_t: Tensor, t: Tensor, shift: float) -> Tensor:
    """``x0 = x_t - sigma v`` (float64 internally; returns ``flow.dtype``)."""
    return x0_from_flow_sigma(flow, x_t, lookup_sigma(t, shift))


def x0_from_flow_sigma(flow: Tensor, x_t: Tensor, sigma: Tensor) -> Tensor:
    """:func:`x0_from_flow` with the table sigma already looked up (``[B]`` or ``[B, F]`` float64).

    Bit for bit ``x_t.double() - sigma * flow.double()`` (the product promoted to float64 by ``sigma``
    in its kernel, negated exactly, then ``x_t`` added), without the float64 copies of the inputs.
    """
    sigma = _bcast(sigma, x_t)
    product = torch.mul(flow, sigma)
    if _tracked(flow, x_t) or flow.shape != x_t.shape:
        return product.neg_().add_(x_t).to(flow.dtype)
    # No graph to record: x_t - p == -p + x_t exactly, and the float64 result is rounded once, straight into
    # the output dtype (no negation pass, no float64 result buffer).
    return torch.sub(x_t, product, out=torch.empty_like(flow))


def flow_from_x0(x0: Tensor, x_t: Tensor, t: Tensor, shift: float) -> Tensor:
    """``v = (x_t - x0) / sigma`` (float64 internally; returns ``x0.dtype``)."""
    sigma = _bcast(lookup_sigma(t, shift), x_t)
    return ((x_t.to(torch.float64) - x0.to(torch.float64)) / sigma).to(x0.dtype)


def sample_dmd_timesteps(
    batch_size: int,
    rng: torch.Generator,
    *,
    shift: float = 5.0,
    min_step: int = 20,
    max_step: int = 980,
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
) -> Tensor:
    """DMD/critic timestep: ``t_raw ~ U{0..999}``, shifted on the continuous value, clamped.

    Returns:
        float64 ``[batch_size]`` timesteps in ``[min_step, max_step]`` (one per sample, §1.4).
    """
    raw = torch.randint(0, num_train_timesteps, (batch_size,), generator=rng).to(torch.float64)
    t = shift_sigma(raw / num_train_timesteps, shift) * num_train_timesteps
    return t.clamp(min_step, max_step)
