"""Training losses: DMD generator loss, critic flow loss, the reward-weighted DMD loss."""

from stream_r1.losses.critic import CriticLossTerms, critic_flow_loss
from stream_r1.losses.dmd import (
    DMDDirection,
    ScoreFn,
    dmd_direction,
    dmd_surrogate_loss,
    masked_mean,
    normalized_direction,
)
from stream_r1.losses.weighted import weighted_dmd_loss

__all__ = [
    "CriticLossTerms",
    "DMDDirection",
    "ScoreFn",
    "critic_flow_loss",
    "dmd_direction",
    "dmd_surrogate_loss",
    "masked_mean",
    "normalized_direction",
    "weighted_dmd_loss",
]
