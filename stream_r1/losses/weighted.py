"""The reward-weighted DMD loss of Stream-R1 (docs/method.md §3.2 item 7, §3.3 I).

``L = 0.5 * W_inter * mean(W_intra ⊙ (x - sg(x - g))^2)`` in float64 with every weight detached, so
``dL/dx = W_inter * W_intra * g / N``: the reward only re-scales (per rollout) and redistributes
(per latent position) the plain DMD gradient; nothing back-propagates through VAE or reward model.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stream_r1.losses.dmd import masked_mean


def _inter_per_sample(w_inter: float | Tensor, batch: int) -> Tensor:
    w = torch.as_tensor(w_inter, dtype=torch.float64).detach()
    if w.dim() == 0:
        return w.expand(batch)
    if w.shape != (batch,):
        raise ValueError(f"w_inter must be a scalar or one weight per sample [B={batch}]; got {tuple(w.shape)}")
    return w


def _intra_broadcast(w_intra: Tensor, shape: torch.Size) -> Tensor:
    """``[F,H,W]`` or ``[B,F,H,W]`` -> ``[B|1, F, 1, H, W]`` (broadcast over the latent channels, §3.2 item 6)."""
    b, f, _, h, w = shape
    if w_intra.dim() == 3 and tuple(w_intra.shape) == (f, h, w):
        return w_intra.unsqueeze(0).unsqueeze(2)
    if w_intra.dim() == 4 and tuple(w_intra.shape) == (b, f, h, w):
        return w_intra.unsqueeze(2)
    raise ValueError(
        f"w_intra must be [F, H, W]=({f}, {h}, {w}) or [B, F, H, W]=({b}, {f}, {h}, {w}) for x {tuple(shape)}; "
        f"got {tuple(w_intra.shape)}"
    )


def weighted_dmd_loss(
    x: Tensor,
    g: Tensor,
    w_inter: float | Tensor = 1.0,
    w_intra: Tensor | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """``0.5 * W_inter * mean_masked(W_intra ⊙ (x - sg(x - g))^2)`` in float64.

    With ``w_inter = 1`` and ``w_intra = None`` this is the plain DMD surrogate. With a batch of
    several rollouts each sample carries its own ``W_inter`` (and optionally ``W_intra``); the mean
    runs over all (selected) elements of the batch, which for B = 1 is the reference formula.

    Args:
        x: rollout latents ``[B, F, C, H, W]`` carrying the generator's graph.
        g: detached DMD direction (:func:`stream_r1.losses.dmd.normalized_direction`), same shape.
        w_inter: Inter-Reliability weight ``exp(beta * r_final)``: a scalar or one per sample ``[B]``.
        w_intra: Intra-Perplexity weights ``[F, H, W]`` or ``[B, F, H, W]`` (mean 1), or ``None`` (all ones).
        mask: optional bool gradient mask broadcastable to ``x``; the mean runs over selected elements.

    Returns:
        float64 scalar loss; ``dL/dx = W_inter * W_intra * g / N``.

    Raises:
        ValueError: a weight or ``g`` whose shape does not fit ``x``.
    """
    if x.dim() != 5 or x.shape != g.shape:
        raise ValueError(f"x {tuple(x.shape)} and g {tuple(g.shape)} must share one [B, F, C, H, W] shape")
    x64 = x.to(torch.float64)
    target = (x64 - g.to(torch.float64)).detach()
    sq = (x64 - target) ** 2
    weight = _inter_per_sample(w_inter, x.shape[0]).to(x.device).view(-1, 1, 1, 1, 1)
    if w_intra is not None:
        weight = weight * _intra_broadcast(w_intra.detach().to(device=x.device, dtype=torch.float64), x.shape)
    return 0.5 * masked_mean(weight * sq, mask)
