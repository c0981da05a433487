"""stream_r1.sample."""
