"""In-house metrics on synthetic videos: flickering (VBench definition), motion, chunking and drift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stream_r1.eval.metrics import (
    chunk_bounds,
    chunk_stats,
    consecutive_frame_mae,
    drift,
    laplacian_variance,
    motion_score,
    moving_pixel_fraction,
    temporal_flickering,
    video_metrics,
)
from stream_r1.eval.video_io import read_video, to_uint8_frames, write_video


def _static(t: int = 8, h: int = 16, w: int = 24, value: int = 90) -> np.ndarray:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    frame[:] = np.clip(frame.astype(int) // 2 + value // 2, 0, 255).astype(np.uint8)
    return np.repeat(frame[None], t, axis=0)


def test_static_video_flickering_is_one() -> None:
    v = _static()
    assert temporal_flickering(v) == 1.0
    assert motion_score(v) == 0.0 and moving_pixel_fraction(v) == 0.0


def test_alternating_black_white_flickering_is_zero() -> None:
    v = np.zeros((6, 8, 8, 3), dtype=np.uint8)
    v[1::2] = 255
    assert temporal_flickering(v) == pytest.approx(0.0, abs=1e-12)
    assert motion_score(v) == pytest.approx(1.0) and moving_pixel_fraction(v) == 1.0


def test_hand_computed_flickering() -> None:
    # 3 frames of 2x2 pixels. Pair 1: one pixel changes by 40 in all channels -> MAE 40/4 = 10.
    # Pair 2: every channel of every pixel changes by 20 -> MAE 20. Mean MAE 15 -> (255-15)/255.
    v = np.full((3, 2, 2, 3), 100, dtype=np.uint8)
    v[1, 0, 0] = 140
    v[2] = v[1].astype(int) + 20
    np.testing.assert_allclose(consecutive_frame_mae(v), [10.0, 20.0])
    assert temporal_flickering(v) == pytest.approx((255 - 15) / 255)
    # Threshold 10 on the largest channel change: pair 1 moves 1/4 pixels, pair 2 all 4.
    assert moving_pixel_fraction(v) == pytest.approx((0.25 + 1.0) / 2)


def test_needs_two_frames_and_right_layout() -> None:
    with pytest.raises(ValueError, match="at least 2 frames"):
        temporal_flickering(np.zeros((1, 4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        temporal_flickering(np.zeros((4, 3, 4, 4), dtype=np.uint8))


def test_chunk_bounds_streaming_layout() -> None:
    # frames_per_block=3: first chunk 1 + 4*2 = 9 pixel frames, then 12 each; 21 latent -> 81 frames.
    b = chunk_bounds(81, 12, 9)
    assert b[0] == (0, 9) and b[1] == (9, 21) and b[-1] == (69, 81) and len(b) == 7
    assert chunk_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    with pytest.raises(ValueError):
        chunk_bounds(10, 0)


def test_laplacian_variance_detects_blur() -> None:
    rng = np.random.default_rng(1)
    sharp = rng.integers(0, 256, size=(32, 32)).astype(np.float32)
    blurred = (sharp + np.roll(sharp, 1, 0) + np.roll(sharp, 1, 1) + np.roll(sharp, (1, 1), (0, 1))) / 4
    assert laplacian_variance(sharp) > 4 * laplacian_variance(blurred)
    assert laplacian_variance(np.full((8, 8), 7.0)) == 0.0


def _ramp_video(chunks: int = 8, per_chunk: int = 4, start: int = 40, step: int = 20) -> np.ndarray:
    """Uniform grey whose brightness rises by ``step`` per chunk."""
    levels = [start + step * c for c in range(chunks)]
    return np.concatenate([np.full((per_chunk, 8, 8, 3), lv, dtype=np.uint8) for lv in levels])


def test_drift_on_brightness_ramp() -> None:
    v = _ramp_video()
    stats = chunk_stats(v, chunk_bounds(v.shape[0], 4))
    np.testing.assert_allclose(stats["brightness"], [(40 + 20 * c) / 255 for c in range(8)], atol=1e-6)
    d = drift(stats)
    # head = chunks 0-1 (mean 50), tail = chunks 6-7 (mean 170): +120/255 luma, grey so no saturation.
    assert d["drift_brightness"] == pytest.approx(120 / 255, abs=1e-6)
    assert d["drift_color"] == pytest.approx(np.sqrt(3) * 120 / 255, abs=1e-6)
    assert d["drift_saturation"] == pytest.approx(0.0, abs=1e-9)
    assert d["drift_sharpness"] == 0.0  # flat frames: no detail to lose
    # A darkening video drifts the other way.
    assert drift(chunk_stats(v[::-1], chunk_bounds(v.shape[0], 4)))["drift_brightness"] < 0


def test_drift_single_chunk_is_zero() -> None:
    v = _static(t=4)
    d = drift(chunk_stats(v, chunk_bounds(4, 12)))
    assert all(x == 0.0 for x in d.values())


def test_video_metrics_and_mp4_round_trip(tmp_path: Path) -> None:
    v = np.repeat(np.repeat(_ramp_video(chunks=4, per_chunk=4), 2, axis=1), 2, axis=2)  # 16x16 frames
    path = write_video(tmp_path / "ramp.mp4", v)
    frames, fps = read_video(path)
    assert frames.shape == (16, 16, 16, 3) and fps == 16.0
    m = video_metrics(frames, fps, chunk_frames=4)
    assert m.duration_s == pytest.approx(1.0) and len(m.chunks["brightness"]) == 4
    # chunk 0 at 40, chunk 3 at 100: lossy H.264 keeps the ramp to within a few levels.
    assert m.drift_brightness == pytest.approx(60 / 255, abs=3 / 255)
    assert 0.9 < m.temporal_flickering < 1.0 and len(m.frame_mae) == 15
    d = m.to_dict()
    assert set(m.SCALARS) <= set(d)


def test_to_uint8_frames_from_library_layout() -> None:
    import torch

    x = torch.stack([torch.full((3, 2, 2), -1.0), torch.full((3, 2, 2), 1.0)])  # [T, 3, H, W]
    out = to_uint8_frames(x)
    assert out.shape == (2, 2, 2, 3) and out[0].max() == 0 and out[1].min() == 255
    with pytest.raises(ValueError):
        to_uint8_frames(torch.zeros(2, 2, 2, 3))


def test_read_video_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "nope.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(ValueError, match="cannot decode"):
        read_video(bad)
