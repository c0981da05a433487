"""Intra-Perplexity saliency: reward-logit gradients from one forward (docs/method.md §3.3-C).

For each axis a in ``metrics``: ``G_a = d logit_a / d target`` with the raw (un-normalised) logit, all
axes from one batched backward (``reward.saliency_backward: batched``) or, as SR1, one
``torch.autograd.grad`` per axis retaining the graph (``per_axis``; equal values, more work). Reward parameters are frozen
(``requires_grad=False``); the graph runs through the activations only.

Targets (``reward.saliency_space``):

* ``pixel`` (default): the normalised frames X ``[T', 3, Hr, Wr]`` before patchify; saliency is the
  per-pixel L2 norm over RGB in float32 -> ``[T', Hr, Wr]``.
* ``patch_reference`` (SR1): the patchified tensor ``[N, 1176]``; per-row L2 norm, laid out on the
  ``(t, h, w)`` patch grid either correctly (``fixed``: undo the 2x2 merge order) or as SR1 does
  (``sr1_naive``: the flat row index reshaped straight to (t, h, w), which scrambles space, §5 item 15).
* ``embeds`` (SR1's non-pixel path): the merged ViT tokens ``[t*h/2*w/2, D]``; per-token L2 norm
  -> ``[t, h/2, w/2]`` (this order is already correct).
"""

from __future__ import annotations

from typing import Protocol

import torch

from stream_r1.reward.preprocess import MERGE_SIZE, RewardVideo, patch_rows_to_grid, patchify
from stream_r1.reward.prompt import REWARD_AXES

SPACES = ("pixel", "patch_reference", "embeds")
PATCH_ORDERS = ("fixed", "sr1_naive")


class RewardForward(Protocol):
    """The two halves of a reward forward that saliency needs (implemented by ``VideoRewardModel``)."""

    def embed_video(self, pixel_values_videos: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """``[N, 1176]`` patches -> ``[M, D]`` merged video tokens."""
        ...

    def logits_from_embeds(self, video_embeds: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Merged video tokens + prompt ids -> raw logits ``[3]`` in (VQ, MQ, TA) order."""
        ...


def sr1_naive_grid(values: torch.Tensor, grid_thw: tuple[int, int, int]) -> torch.Tensor:
    """SR1's layout of per-row patch values: the flat row index reshaped straight to (t, h, w).

    Reproduces ``sal.view(t_p, h_p, w_p)`` of SR1 ``compute_pixel_spatial_saliency``; rows are really
    merge-block-major, so this map is spatially scrambled. Kept only to reproduce SR1 exactly.
    """
    return values.reshape(grid_thw)


def _l2(g: torch.Tensor) -> torch.Tensor:
    """L2 norm over dim 1 as ``sqrt(sum(g**2))``.

    Why not ``g.norm(dim=1)``: ATen's CPU ``linalg_vector_norm`` over a non-innermost dimension takes a slow
    generic reduction (measured 1.3 ms vs 0.05 ms for a ``[20, 3, 28, 28]`` gradient, one thread; ~30 % of a
    tiny saliency pass); the two agree to float32 rounding. Only the pixel space needs it: the patch and embedding
    spaces reduce the innermost dimension, where ``norm`` is fast and is kept bit-identical to SR1.
    """
    return g.square().sum(dim=1).sqrt()


def _check_args(metrics: tuple[str, ...], space: str, patch_order: str) -> None:
    if not metrics or len(set(metrics)) != len(metrics) or any(m not in REWARD_AXES for m in metrics):
        raise ValueError(f"saliency metrics={metrics!r} must be distinct axes from {REWARD_AXES}")
    if space not in SPACES:
        raise ValueError(f"reward.saliency_space={space!r}; allowed {SPACES}")
    if patch_order not in PATCH_ORDERS:
        raise ValueError(f"reward.patch_order={patch_order!r}; allowed {PATCH_ORDERS}")


def _grads(
    logits: torch.Tensor, target: torch.Tensor, metrics: tuple[str, ...], batched: bool
) -> dict[str, torch.Tensor]:
    """``d logit_a / d target`` for every axis in ``metrics`` (raw logits, like SR1).

    ``batched``: one backward for all axes: the selected logits ``[k]`` are differentiated against the
    rows of the ``k x k`` identity with ``is_grads_batched=True`` (autograd vmaps the backward over them),
    so the graph is walked once instead of once per axis; row ``i`` is the gradient of logit ``i``.
    Otherwise one ``autograd.grad`` per axis retaining the graph, as SR1 does (same values).
    """
    if not batched:
        out = {}
        for i, axis in enumerate(metrics):
            (g,) = torch.autograd.grad(logits[REWARD_AXES.index(axis)], target, retain_graph=i < len(metrics) - 1)
            out[axis] = g.float()
        return out
    rows = torch.tensor([REWARD_AXES.index(a) for a in metrics], device=logits.device)
    selected = logits.index_select(0, rows)
    basis = torch.eye(len(metrics), dtype=selected.dtype, device=selected.device)
    (g,) = torch.autograd.grad(selected, target, grad_outputs=basis, is_grads_batched=True)
    return {axis: g[i].float() for i, axis in enumerate(metrics)}


def compute_saliency(
    model: RewardForward,
    video: RewardVideo,
    input_ids: torch.Tensor,
    *,
    metrics: tuple[str, ...] = ("MQ", "VQ", "TA"),
    space: str = "pixel",
    patch_order: str = "fixed",
    batched: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Raw logits and per-axis saliency maps from one grad-enabled reward forward.

    Args:
        model: The reward forward halves.
        video: Preprocessed video; ``video.x`` is detached and used as the gradient leaf.
        input_ids: ``[1, L]`` prompt ids with the video placeholders.
        metrics: Axes to differentiate, in order.
        space: ``pixel`` | ``patch_reference`` | ``embeds``.
        patch_order: ``fixed`` | ``sr1_naive`` (``patch_reference`` only).
        batched: all axes' gradients from one batched backward (default) or one backward per axis (SR1).

    Returns:
        ``(logits [3] float32 detached, {axis: saliency float32 detached})``; saliency shapes:
        ``[T', Hr, Wr]`` (pixel), ``[t, h, w]`` (patch_reference), ``[t, h/2, w/2]`` (embeds).

    Raises:
        ValueError: Unknown metric, space or order.
    """
    _check_args(metrics, space, patch_order)
    grid = video.grid_tensor()
    t, h, w = video.grid_thw
    with torch.enable_grad():
        if space == "pixel":
            x = video.x.detach().requires_grad_(True)
            logits = model.logits_from_embeds(model.embed_video(patchify(x), grid), input_ids)
            grads = _grads(logits, x, metrics, batched)
            sal = {a: _l2(g) for a, g in grads.items()}  # [T', Hr, Wr]: L2 over RGB
        elif space == "patch_reference":
            pv = patchify(video.x.detach()).requires_grad_(True)
            logits = model.logits_from_embeds(model.embed_video(pv, grid), input_ids)
            grads = _grads(logits, pv, metrics, batched)
            layout = patch_rows_to_grid if patch_order == "fixed" else sr1_naive_grid
            sal = {a: layout(g.norm(dim=1), (t, h, w)) for a, g in grads.items()}
        else:
            emb = model.embed_video(patchify(video.x.detach()), grid).detach().requires_grad_(True)
            logits = model.logits_from_embeds(emb, input_ids)
            grads = _grads(logits, emb, metrics, batched)
            sal = {a: g.norm(dim=1).reshape(t, h // MERGE_SIZE, w // MERGE_SIZE) for a, g in grads.items()}
    return logits.detach().float(), {a: s.detach() for a, s in sal.items()}
