"""stream_r1.ops."""
