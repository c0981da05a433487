"""Block-causal ODE regression of the student on teacher trajectories (docs/method.md §1.9).

The student sees the *whole* sequence at once through ``CausalDenoiser.forward_full`` (block mask,
no KV cache). Each block of each sample takes a random one of the non-clean stored states (and its
timestep); the target is the clean latent; plain MSE over frames whose t != 0. :class:`OdeObjective`
is this regression as a mode of the training loop (``stream_r1.train.trainer.Trainer``), so ODE
initialisation runs through the same strategy, checkpoints and metrics as distillation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from stream_r1.config.derived import check_latent_frames
from stream_r1.models.denoiser import CausalDenoiser
from stream_r1.train.ode_pairs import OdePairs


def regression_inputs(
    states: Tensor, timesteps: list[float], frames_per_block: int, rng: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw per-block noise levels from stored trajectories.

    Args:
        states: ``[B, S, F, C, H, W]`` stored states (noise first, clean last).
        timesteps: ``S`` timesteps of the states (the last is 0).
        frames_per_block: Latent frames per causal block.
        rng: RNG for the per-block state index (on ``states``' device or CPU).

    Returns:
        ``(x_t [B, F, C, H, W], t [B, F], target [B, F, C, H, W])``.

    Raises:
        ValueError: ``F`` not a multiple of ``frames_per_block`` or a timestep count mismatch.
    """
    b, s, f = states.shape[:3]
    check_latent_frames(f, frames_per_block, "ODE pair frames")
    if len(timesteps) != s:
        raise ValueError(f"{len(timesteps)} timesteps for {s} stored states")
    idx = torch.randint(0, s - 1, (b, f // frames_per_block), generator=rng, device=rng.device)
    idx = idx.to(states.device).repeat_interleave(frames_per_block, dim=1)  # [B, F]
    gather = idx[:, None, :, None, None, None].expand(b, 1, f, *states.shape[3:])
    x_t = torch.gather(states, 1, gather)[:, 0]
    t = torch.as_tensor(timesteps, dtype=torch.float32, device=states.device)[idx]
    return x_t, t, states[:, -1]


def regression_loss(student: CausalDenoiser, x_t: Tensor, t: Tensor, text_emb: Tensor, target: Tensor) -> Tensor:
    """MSE between the block-causal x0 prediction and the clean latent over frames with ``t != 0``."""
    pred = student.forward_full(x_t, t, text_emb)
    mask = (t != 0).to(pred.dtype)[:, :, None, None, None]  # [B, F, 1, 1, 1]
    err = (pred.float() - target.float()) ** 2 * mask
    denom = mask.sum() * pred[0, 0].numel()
    return err.sum() / denom.clamp_min(1.0)


@dataclass
class OdeObjective:
    """The ODE-initialisation objective the trainer steps on (``Trainer`` in ODE mode).

    Each optimizer step regresses the student on ``ode.batch_size_per_rank`` trajectories of this
    rank: per-block states drawn with ``rng``, their cached prompt embeddings, :func:`regression_loss`.

    Args:
        student: the causal student wrapper (its transformer is the trained network).
        pairs: the ODE-pairs directory reader (``prompt, states [S, F, C, H, W]`` per item).
        embed: ``prompts -> [B, L, D]`` cached text embeddings (CPU).
        device: where the step runs.
        dtype: compute dtype of latents and embeddings.
    """

    student: CausalDenoiser
    pairs: OdePairs
    embed: Callable[[list[str]], Tensor]
    device: torch.device
    dtype: torch.dtype

    def step(self, indices: list[int], rng: torch.Generator) -> Tensor:
        """The regression loss (float32 scalar with the student's graph) of the trajectories ``indices``."""
        items = [self.pairs[i] for i in indices]
        states = torch.stack([s for _, s in items]).to(self.device, self.dtype)
        emb = self.embed([p for p, _ in items]).to(self.device, self.dtype)
        x_t, t, target = regression_inputs(states, self.pairs.timesteps, self.student.frames_per_block, rng)
        return regression_loss(self.student, x_t, t, emb, target)
