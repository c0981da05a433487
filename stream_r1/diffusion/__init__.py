"""Flow-matching math (pure functions): sigma tables, warped steps, noising, x0/flow conversion."""

from stream_r1.diffusion.flow_matching import (
    add_noise,
    add_noise_sigma,
    flow_from_x0,
    lookup_sigma,
    sample_dmd_timesteps,
    shift_sigma,
    sigma_table,
    warped_timesteps,
    x0_from_flow,
    x0_from_flow_sigma,
)

__all__ = [
    "add_noise",
    "add_noise_sigma",
    "flow_from_x0",
    "lookup_sigma",
    "sample_dmd_timesteps",
    "shift_sigma",
    "sigma_table",
    "warped_timesteps",
    "x0_from_flow",
    "x0_from_flow_sigma",
]
