"""Stream-R1 distiller: DMD with reward-weighted generator loss (docs/method.md §1.3-1.5, §2.1, §3.2-3.3).

One object composes the three diffusion networks (causal student, critic, teacher), the optional
VAE and VideoReward model and the trainer-owned :class:`RewardBalancer`, and exposes the two losses
the trainer steps on:

- :meth:`StreamR1Distiller.generator_loss` — self-forcing rollout with gradient at the exit step,
  DMD direction ``g`` from critic and guided teacher, then per ``reward.mode``:
  ``none`` plain DMD ``0.5·mean((x − sg(x − g))²)``; otherwise the rollout is decoded under no_grad,
  scored by VideoReward (:func:`stream_r1.reward.rollout_weights.compute_rollout_weights`) and the
  loss is ``0.5·exp(β·r_final)·mean(W_intra ⊙ (x − sg(x − g))²)`` — ``MQ`` with ``reward.intra: false``
  is Reward Forcing, ``BalancedOverall`` with intra weighting is Stream-R1.
- :meth:`StreamR1Distiller.critic_loss` — flow-matching loss of the critic on a separate no-grad rollout.

The exit step and the torch RNG are passed in (the trainer draws k on rank 0 and broadcasts it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from stream_r1.config.schema import DMDConfig, ModelConfig, RewardConfig, RolloutConfig
from stream_r1.losses import critic_flow_loss, dmd_direction, weighted_dmd_loss
from stream_r1.method import metric_keys as mk
from stream_r1.method.guidance import GuidedScore
from stream_r1.models.denoiser import BidirectionalDenoiser, CausalDenoiser
from stream_r1.models.vae import WanVAE
from stream_r1.reward.model import VideoRewardModel
from stream_r1.reward.rollout_weights import RolloutWeights, compute_rollout_weights
from stream_r1.reward.weighting import RewardBalancer
from stream_r1.rollout.self_forcing import RolloutInfo, self_forcing_rollout


@dataclass(frozen=True)
class DistillBatch:
    """One micro-batch of prompts for a distillation step.

    Attributes:
        prompts: the ``B`` prompt strings (the reward model reads the text).
        text_emb: their embeddings ``[B, L, D]`` (zero-padded to L, no mask).
        negative_emb: the cached negative-prompt embedding ``[1, L, D]`` (``NegativePromptEmbedding.get()``).
    """

    prompts: list[str]
    text_emb: Tensor
    negative_emb: Tensor

    def __post_init__(self) -> None:
        if self.text_emb.dim() != 3 or self.text_emb.shape[0] != len(self.prompts):
            raise ValueError(
                f"text_emb must be [B={len(self.prompts)}, L, D] (one row per prompt); got {tuple(self.text_emb.shape)}"
            )
        if self.negative_emb.dim() != 3 or self.negative_emb.shape[1:] != self.text_emb.shape[1:]:
            raise ValueError(
                f"negative_emb must be [1, L, D] matching text_emb {tuple(self.text_emb.shape)}; "
                f"got {tuple(self.negative_emb.shape)}"
            )


@dataclass(frozen=True)
class GeneratorMedia:
    """Detached CPU tensors of one generator step's first rollout, for TensorBoard images/videos.

    Attributes:
        rollout: the rollout latents ``[1, F, C, H, W]`` (float32).
        w_intra: Intra-Perplexity weights ``[1, F, H, W]``, or None (plain DMD / no intra weighting).
        temporal_profile: the temporal factor tau of W_intra per latent frame ``[1, F]``, or None.
        pixels: the rollout as the reward decoded it, ``[1, T, 3, Hp, Wp]`` in [-1, 1] (float32), or None
            when no reward mode decoded it (plain DMD).
    """

    rollout: Tensor
    w_intra: Tensor | None
    temporal_profile: Tensor | None
    pixels: Tensor | None


@dataclass(frozen=True)
class StepResult:
    """What one generator or critic micro-step of the distiller produced.

    Attributes:
        loss: float64 scalar; its gradient reaches only the network being trained.
        metrics: flat ``{key: value}`` for logging (keys in ``stream_r1.method.metric_keys``).
        media: the first rollout's latents, weights and decoded pixels (generator steps with
            ``keep_media=True`` only; else None).
    """

    loss: Tensor
    metrics: dict[str, float]
    media: GeneratorMedia | None = None


class StreamR1Distiller:
    """Composes student, critic, teacher, VAE and reward model into the two training losses.

    Args:
        student: the causal student (trainable; the DMD generator).
        critic: the fake score (trainable, bidirectional).
        teacher: the real score (frozen, bidirectional).
        model_cfg: student geometry (``frames_per_block``).
        rollout_cfg: rollout length, latent shape, step list, shift, context noise.
        dmd_cfg: guidance scales and the DMD/critic timestep distribution.
        reward_cfg: reward mode and weighting (``mode: none`` = plain DMD).
        vae: decodes rollouts for the reward (required unless ``mode: none``).
        reward_model: VideoReward (required unless ``mode: none``).
        balancer: Adaptive Reward Balancing state, owned (and checkpointed) by the trainer
            (required for ``BalancedOverall``).

    Raises:
        ValueError: a reward mode whose models are missing.
    """

    def __init__(
        self,
        student: CausalDenoiser,
        critic: BidirectionalDenoiser,
        teacher: BidirectionalDenoiser,
        *,
        model_cfg: ModelConfig,
        rollout_cfg: RolloutConfig,
        dmd_cfg: DMDConfig,
        reward_cfg: RewardConfig,
        vae: WanVAE | None = None,
        reward_model: VideoRewardModel | None = None,
        balancer: RewardBalancer | None = None,
    ) -> None:
        if reward_cfg.enabled and (vae is None or reward_model is None):
            missing = [n for n, v in (("vae", vae), ("reward_model", reward_model)) if v is None]
            raise ValueError(
                f"reward.mode={reward_cfg.mode!r} needs {' and '.join(missing)}; load them or set reward.mode=none"
            )
        if reward_cfg.mode == "BalancedOverall" and balancer is None:
            raise ValueError("reward.mode='BalancedOverall' needs a RewardBalancer (the trainer owns and saves it)")
        self.student = student
        self.critic = critic
        self.teacher = teacher
        self.model_cfg = model_cfg
        self.rollout_cfg = rollout_cfg
        self.dmd_cfg = dmd_cfg
        self.reward_cfg = reward_cfg
        self.vae = vae
        self.reward_model = reward_model
        self.balancer = balancer
        self.real_score = GuidedScore(teacher, dmd_cfg.guidance_scale)
        self.fake_score = GuidedScore(critic, dmd_cfg.fake_guidance_scale)

    # ------------------------------------------------------------------ rollout
    def rollout(
        self, batch: DistillBatch, exit_step: int, rng: torch.Generator, *, grad_enabled: bool
    ) -> tuple[Tensor, RolloutInfo]:
        """The self-forcing rollout ``[B, F, C, H, W]`` of ``batch`` (§1.3)."""
        return self_forcing_rollout(
            self.student,
            batch.text_emb,
            self.rollout_cfg,
            frames_per_block=self.model_cfg.frames_per_block,
            exit_step=exit_step,
            rng=rng,
            grad_enabled=grad_enabled,
        )

    def _score_kwargs(self) -> dict[str, float | int]:
        return {
            "sigma_shift": self.rollout_cfg.student_sigma_shift,
            "sampling_shift": self.dmd_cfg.timestep_sampling_shift,
            "min_step": self.dmd_cfg.min_step,
            "max_step": self.dmd_cfg.max_step,
        }

    # ------------------------------------------------------------------ generator
    def generator_loss(
        self, batch: DistillBatch, exit_step: int, rng: torch.Generator, *, keep_media: bool = False
    ) -> StepResult:
        """The generator's (reward-weighted) DMD loss on a fresh rollout.

        RNG order on ``rng``: rollout noise (:func:`self_forcing_rollout`), then DMD t and noise.

        Args:
            batch: prompts and embeddings.
            exit_step: the rollout's shared exit step k (drawn by the trainer).
            rng: torch RNG.
            keep_media: also return the first rollout's :class:`GeneratorMedia` (detached CPU copies,
                with the pixels the reward decoded, so logging never decodes again).

        Returns:
            :class:`StepResult` (float64 loss whose gradient reaches only the student; metrics in
            docs/method.md).
        """
        x, info = self.rollout(batch, exit_step, rng, grad_enabled=True)
        neg = batch.negative_emb

        def fake(x_t: Tensor, t: Tensor) -> Tensor:
            return self.fake_score(x_t, t, batch.text_emb, neg)

        def real(x_t: Tensor, t: Tensor) -> Tensor:
            return self.real_score(x_t, t, batch.text_emb, neg)

        direction = dmd_direction(x, fake, real, rng, **self._score_kwargs())
        dmd_value = weighted_dmd_loss(x.detach(), direction.g)  # the unweighted surrogate value, for logging
        metrics: dict[str, float] = {
            mk.GENERATOR_DMD_LOSS: float(dmd_value),
            "generator/exit_step": float(info.exit_step),
            "generator/exit_timestep": float(info.exit_timesteps[0]),
            "dmd/t": float(direction.t.mean()),
            "dmd/normalizer": float(direction.normalizer.mean()),
            "dmd/g_abs_mean": float(direction.g.abs().mean()),
        }
        if not self.reward_cfg.enabled:
            loss, pixels, weights = weighted_dmd_loss(x, direction.g), None, None
        else:
            loss, pixels, weights = self._reward_weighted_loss(x, direction.g, batch.prompts, metrics)
        metrics[mk.GENERATOR_LOSS] = float(loss.detach())
        return StepResult(loss, metrics, _media(x, pixels, weights) if keep_media else None)

    def _reward_weighted_loss(
        self, x: Tensor, g: Tensor, prompts: list[str], metrics: dict[str, float]
    ) -> tuple[Tensor, Tensor, list[RolloutWeights]]:
        """Decode under no_grad, score each rollout, form ``0.5·W_inter·mean(W_intra ⊙ (x − sg(x − g))²)``.

        Args:
            x: rollout ``[B, F, C, H, W]`` (with graph).
            g: detached DMD direction, same shape.
            prompts: the ``B`` prompts.
            metrics: updated in place with the reward metrics.

        Returns:
            ``(loss, pixels [B, T, 3, Hp, Wp], one RolloutWeights per sample)``.
        """
        assert self.vae is not None and self.reward_model is not None  # checked in __init__
        with torch.no_grad():
            pixels = self.vae.decode(x.detach())  # nothing back-propagates through VAE or reward (§3.3 J)
        _, num_frames, _, height, width = x.shape
        # One reward call per rollout (the reference scores batch element 0 with B = 1); each call also
        # advances the balancer by one micro-step (§3.3 G).
        weights = [
            compute_rollout_weights(
                self.reward_model, pixels[b], prompt, (num_frames, height, width), self.reward_cfg, self.balancer
            )
            for b, prompt in enumerate(prompts)
        ]
        w_inter = torch.stack([torch.as_tensor(w.w_inter, dtype=torch.float64).reshape(()) for w in weights])
        intra = [w.w_intra for w in weights]
        w_intra = None if any(w is None for w in intra) else torch.stack(intra)  # type: ignore[arg-type]
        loss = weighted_dmd_loss(x, g, w_inter.to(x.device), w_intra)
        metrics.update(_reward_metrics(weights, w_inter, w_intra))
        return loss, pixels, weights

    # ------------------------------------------------------------------ critic
    def critic_loss(self, batch: DistillBatch, exit_step: int, rng: torch.Generator) -> StepResult:
        """Flow-matching loss of the critic on a separate no-grad rollout (§1.5).

        RNG order on ``rng``: rollout noise, then critic t and noise.

        Args:
            batch: prompts and embeddings.
            exit_step: the critic rollout's exit step k (drawn by the trainer).
            rng: torch RNG.

        Returns:
            :class:`StepResult` (float64 loss whose gradient reaches only the critic).
        """
        with torch.no_grad():
            x, info = self.rollout(batch, exit_step, rng, grad_enabled=False)

        def critic(x_t: Tensor, t: Tensor) -> Tensor:
            return self.fake_score(x_t, t, batch.text_emb, batch.negative_emb)

        loss, terms = critic_flow_loss(x, critic, rng, **self._score_kwargs())
        metrics = {
            mk.CRITIC_LOSS: float(loss.detach()),
            "critic/t": float(terms.t.mean()),
            "critic/x0_mse": terms.x0_mse,
            "critic/exit_step": float(info.exit_step),
        }
        return StepResult(loss, metrics)


def _media(x: Tensor, pixels: Tensor | None, weights: list[RolloutWeights] | None) -> GeneratorMedia:
    """The first rollout's latents, weights and pixels as detached CPU tensors (batch dimension kept)."""
    first = weights[0] if weights else None
    w_intra = None if first is None or first.w_intra is None else first.w_intra[None].float().cpu()
    tau = None if first is None or first.temporal_profile is None else first.temporal_profile[None].float().cpu()
    return GeneratorMedia(
        rollout=x[:1].detach().float().cpu(),
        w_intra=w_intra,
        temporal_profile=tau,
        pixels=None if pixels is None else pixels[:1].detach().float().cpu(),
    )


def _reward_metrics(per_sample: list[RolloutWeights], w_inter: Tensor, w_intra: Tensor | None) -> dict[str, float]:
    """Batch-mean reward scalars, W_inter, W_intra statistics and the per-frame temporal profile."""
    n = len(per_sample)
    out: dict[str, float] = {}
    for axis in sorted({a for w in per_sample for a in w.rewards}):
        out[f"reward/{axis}"] = sum(float(w.rewards[axis]) for w in per_sample) / n
    out["reward/r"] = sum(float(w.r) for w in per_sample) / n
    out[mk.REWARD_R_FINAL] = sum(float(w.r_final) for w in per_sample) / n
    out["reward/penalty"] = sum(float(w.penalty) for w in per_sample) / n
    out[mk.REWARD_W_INTER] = float(w_inter.mean())
    if w_intra is not None:
        out["w_intra/mean"] = float(w_intra.mean())
        out["w_intra/min"] = float(w_intra.min())
        out["w_intra/max"] = float(w_intra.max())
        out["w_intra/std"] = float(w_intra.float().std())
    profiles = [w.temporal_profile for w in per_sample if w.temporal_profile is not None]
    if profiles:
        mean_profile = torch.stack([torch.as_tensor(p, dtype=torch.float64) for p in profiles]).mean(0)
        for f, value in enumerate(mean_profile.tolist()):
            out[f"w_intra/temporal/{f:02d}"] = float(value)
    return out
