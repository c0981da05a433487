"""stream_r1.models."""
