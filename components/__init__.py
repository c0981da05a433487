"""Thin KFP v2 lightweight components; each body calls one ``stream_r1.ops.steps`` function."""
