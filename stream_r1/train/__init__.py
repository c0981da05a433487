"""stream_r1.train."""
