"""Stream-R1: reward-weighted distribution matching distillation for streaming video."""

__version__ = "0.1.0"
