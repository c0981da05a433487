"""stream_r1.reward."""
