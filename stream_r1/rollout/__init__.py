"""stream_r1.rollout."""
