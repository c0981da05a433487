"""stream_r1.distributed."""
