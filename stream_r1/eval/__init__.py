"""stream_r1.eval."""
