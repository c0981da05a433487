"""Metric keys shared by their producers (distiller, trainer, ODE regression) and consumers (DVC plots,
TensorBoard hparams, the CLI summary, tests): one name per quantity, defined once.

Window means (one value per optimizer step) are logged under ``loss/*`` and ``grad_norm/*``; the
distiller's per-micro-step values under ``generator/*``, ``critic/*``, ``dmd/*``, ``reward/*`` and
``w_intra/*`` (definitions: ``docs/method.md``).
"""

from __future__ import annotations

LOSS_GENERATOR = "loss/generator"
"""Window mean of the generator's (reward-weighted) DMD loss."""
LOSS_CRITIC = "loss/critic"
"""Window mean of the critic's flow-matching loss."""
LOSS_ODE_REGRESSION = "loss/ode_regression"
"""Block-causal ODE regression loss of one ODE-initialisation step."""
GRAD_NORM_GENERATOR = "grad_norm/generator"
"""Global gradient norm of the student before clipping."""
GRAD_NORM_CRITIC = "grad_norm/critic"
"""Global gradient norm of the critic before clipping."""

GENERATOR_LOSS = "generator/loss"
"""One generator micro-step's loss (the value ``loss/generator`` averages)."""
GENERATOR_DMD_LOSS = "generator/dmd_loss"
"""The unweighted DMD surrogate of the same step."""
CRITIC_LOSS = "critic/loss"
"""One critic micro-step's loss (the value ``loss/critic`` averages)."""
REWARD_W_INTER = "reward/w_inter"
"""Batch mean of W_inter = exp(beta * r_final)."""
REWARD_R_FINAL = "reward/r_final"
"""Batch mean of the balanced scalar reward."""

LOSS_CURVES = (LOSS_CRITIC, LOSS_GENERATOR, LOSS_ODE_REGRESSION)
"""The losses a run's plots follow (``dvc plots``, ``stream_r1.ops.dvc``)."""
HPARAM_METRICS = (LOSS_CRITIC, LOSS_GENERATOR)
"""Summary metrics written next to the hyper-parameters at the end of a training run."""
