"""DMD generator loss (docs/method.md §1.4, Self-Forcing ``model/dmd.py``).

The generator's rollout ``x`` is pushed along the normalised score difference
``g = (f_fake - f_real) / mean|x - f_real|`` through the surrogate ``0.5 * mean((x - sg(x - g))^2)``,
whose gradient w.r.t. ``x`` is exactly ``g / N``. The work is split so the Stream-R1 loss
(:mod:`stream_r1.losses.weighted`) reuses the same direction:

- :func:`normalized_direction` — pure tensor math: ``g`` and the per-sample normaliser;
- :func:`dmd_direction` — samples t and noise, calls the two scores under no_grad, returns :class:`DMDDirection`;
- :func:`dmd_surrogate_loss` — the float64 surrogate (optionally over a gradient mask).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from stream_r1.diffusion import add_noise, sample_dmd_timesteps

# A score maps (x_t [B,F,C,H,W], t [B]) to an x0 prediction [B,F,C,H,W]; text conditioning and
# guidance are bound by the caller (stream_r1.method.guidance).
ScoreFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class DMDDirection:
    """The detached DMD update direction of one rollout batch.

    Attributes:
        g: normalised direction ``(f_fake - f_real) / n`` float64 ``[B, F, C, H, W]``, detached.
        t: DMD timesteps float64 ``[B]`` (one per sample, in ``[min_step, max_step]``).
        normalizer: ``n = mean_{F,C,H,W} |x - f_real|`` float64 ``[B]``.
    """

    g: Tensor
    t: Tensor
    normalizer: Tensor


def _check_video(name: str, x: Tensor) -> None:
    if x.dim() != 5:
        raise ValueError(f"{name} must be a latent video [B, F, C, H, W]; got shape {tuple(x.shape)}")


def normalized_direction(x: Tensor, f_fake: Tensor, f_real: Tensor) -> tuple[Tensor, Tensor]:
    """``g = nan_to_num((f_fake - f_real) / mean_{F,C,H,W} |x - f_real|)`` per sample (§1.4 step 3).

    ``x == f_real`` gives ``n = 0``: that sample's ``g`` is 0 (no update) rather than the reference's
    ``nan_to_num(c/0) = +-max-float``; NaNs elsewhere become 0 (``nan_to_num``).

    Args:
        x: rollout latents ``[B, F, C, H, W]`` (any dtype; read detached).
        f_fake: critic x0 prediction, same shape.
        f_real: guided teacher x0 prediction, same shape.

    Returns:
        ``(g, n)``: float64 ``g`` ``[B, F, C, H, W]`` and float64 normaliser ``[B]``, both detached.

    Raises:
        ValueError: shapes differ or are not 5-D.
    """
    for name, v in (("x", x), ("f_fake", f_fake), ("f_real", f_real)):
        _check_video(name, v)
    if not x.shape == f_fake.shape == f_real.shape:
        raise ValueError(
            f"x {tuple(x.shape)}, f_fake {tuple(f_fake.shape)} and f_real {tuple(f_real.shape)} must share one shape"
        )
    x64, fake64, real64 = (v.detach().to(torch.float64) for v in (x, f_fake, f_real))
    n = (x64 - real64).abs().mean(dim=(1, 2, 3, 4))
    degenerate = (n == 0).view(-1, 1, 1, 1, 1)
    # The reference's nan_to_num maps (f_fake - f_real)/0 to +-max-float, a blown-up step; a sample whose
    # rollout equals the teacher gets no update instead (0/0 -> 0, as nan_to_num does).
    g = (fake64 - real64) / torch.where(degenerate, torch.ones_like(n).view(-1, 1, 1, 1, 1), n.view(-1, 1, 1, 1, 1))
    g = torch.nan_to_num(torch.where(degenerate, torch.zeros_like(g), g))
    return g, n


def dmd_direction(
    x: Tensor,
    fake_score: ScoreFn,
    real_score: ScoreFn,
    rng: torch.Generator,
    *,
    sigma_shift: float = 5.0,
    sampling_shift: float = 5.0,
    min_step: int = 20,
    max_step: int = 980,
) -> DMDDirection:
    """Sample t and noise, score the noised rollout with critic and teacher, return ``g`` (§1.4 steps 1-3).

    Random draws (in this order, all from ``rng``): the timesteps ``[B]``, then the noise
    ``[B, F, C, H, W]`` (on ``rng.device``, moved to ``x.device``).

    Args:
        x: rollout latents ``[B, F, C, H, W]`` (may require grad; only read detached here).
        fake_score: critic x0 score ``(x_t, t) -> x0`` (conditional; guidance bound by the caller).
        real_score: guided teacher x0 score ``(x_t, t) -> x0``.
        rng: torch RNG for t and noise.
        sigma_shift: sigma-table shift used for noising (the student's table, rollout.student_sigma_shift).
        sampling_shift: shift applied to ``t_raw ~ U{0..999}`` (dmd.timestep_sampling_shift).
        min_step: lower clamp of t (dmd.min_step).
        max_step: upper clamp of t (dmd.max_step).

    Returns:
        :class:`DMDDirection` (all detached).
    """
    _check_video("x", x)
    batch = x.shape[0]
    t = sample_dmd_timesteps(batch, rng, shift=sampling_shift, min_step=min_step, max_step=max_step)
    t = t.to(x.device)
    noise = torch.randn(x.shape, generator=rng, dtype=x.dtype, device=rng.device).to(x.device)
    with torch.no_grad():
        x_t = add_noise(x.detach(), noise, t, sigma_shift)
        f_fake = fake_score(x_t, t)
        f_real = real_score(x_t, t)
    g, n = normalized_direction(x, f_fake, f_real)
    return DMDDirection(g=g, t=t.to(torch.float64), normalizer=n)


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``values`` over all elements, or over the elements where ``mask`` is true.

    Args:
        values: any shape, e.g. ``[B, F, C, H, W]``.
        mask: ``None`` or a bool tensor broadcastable to ``values`` (e.g. ``[B, F, 1, 1, 1]``).

    Raises:
        TypeError: the mask is not bool.
        ValueError: the mask selects no element, or does not broadcast.
    """
    if mask is None:
        return values.mean()
    if mask.dtype != torch.bool:
        raise TypeError(f"gradient mask must be a bool tensor; got dtype {mask.dtype}")
    try:
        full = mask.expand_as(values)
    except RuntimeError as err:
        raise ValueError(
            f"gradient mask of shape {tuple(mask.shape)} does not broadcast to {tuple(values.shape)}"
        ) from err
    count = full.sum()
    if int(count) == 0:
        raise ValueError("gradient mask selects no element; pass mask=None to use every frame")
    return (values * full).sum() / count


def dmd_surrogate_loss(x: Tensor, g: Tensor, mask: Tensor | None = None) -> Tensor:
    """``0.5 * mean((x - sg(x - g))^2)`` in float64, so that ``dL/dx = g / N`` (§1.4 step 4).

    Args:
        x: rollout latents ``[B, F, C, H, W]`` carrying the generator's graph.
        g: detached direction, same shape (any float dtype; used in float64).
        mask: optional bool gradient mask broadcastable to ``x``; N = number of selected elements.

    Returns:
        float64 scalar loss.

    Raises:
        ValueError: shape mismatch.
    """
    if x.shape != g.shape:
        raise ValueError(f"x {tuple(x.shape)} and g {tuple(g.shape)} must share one shape")
    x64 = x.to(torch.float64)
    target = (x64 - g.to(torch.float64)).detach()
    return 0.5 * masked_mean((x64 - target) ** 2, mask)
