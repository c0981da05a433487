"""stream_r1.losses."""
