"""Training losses: DMD generator loss, critic flow loss, the Stream-R1 weighted loss."""

from stream_r1.losses.critic import CriticLossTerms, critic_flow_loss
from stream_r1.losses.dmd import (
    DMDDirection,
    ScoreFn,
    dmd_direction,
    dmd_surrogate_loss,
    masked_mean,
    normalized_direction,
)
from stream_r1.losses.weighted import stream_r1_loss

__all__ = [
    "CriticLossTerms",
    "DMDDirection",
    "ScoreFn",
    "critic_flow_loss",
    "dmd_direction",
    "dmd_surrogate_loss",
    "masked_mean",
    "normalized_direction",
    "stream_r1_loss",
]
