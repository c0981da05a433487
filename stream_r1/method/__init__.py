"""stream_r1.method."""
