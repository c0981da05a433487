"""Streaming mp4 writer: pixel chunks go to ffmpeg as they are decoded (imageio-ffmpeg, H.264, yuv420p).

The file appears under its final name only once it is complete (written as a hidden ``.partial.mp4`` and
renamed on close), so a crash never leaves a truncated video that looks finished.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

import numpy as np
import torch


def to_uint8_frames(pixels: torch.Tensor) -> np.ndarray:
    """Pixels ``[T, 3, H, W]`` in ``[-1, 1]`` -> uint8 ``[T, H, W, 3]`` (maps to [0, 255] like Wan's ``(x+1)/2``)."""
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise ValueError(f"pixels must be [T, 3, H, W] in [-1, 1]; got shape {tuple(pixels.shape)}")
    x = ((pixels.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).cpu().numpy())


class Mp4Writer:
    """Append frames chunk by chunk to an mp4.

    Args:
        path: Final ``.mp4`` path.
        fps: Frame rate (16 for Wan).
        quality: imageio-ffmpeg quality 0-10 (10 = best).
    """

    def __init__(self, path: str | Path, fps: int = 16, quality: int = 8) -> None:
        self.path = Path(path)
        if self.path.suffix != ".mp4":
            raise ValueError(f"video path {self.path} must end in .mp4")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.stem}.partial.mp4")
        self.fps = fps
        self.quality = quality
        self.num_frames = 0
        self._gen = None  # imageio_ffmpeg.write_frames generator, opened on the first frame (size known)

    def write(self, pixels: torch.Tensor) -> None:
        """Append ``[t, 3, H, W]`` pixels in ``[-1, 1]``."""
        frames = to_uint8_frames(pixels)
        if self._gen is None:
            import imageio_ffmpeg

            h, w = frames.shape[1:3]
            self._gen = imageio_ffmpeg.write_frames(
                str(self._tmp), (w, h), fps=self.fps, codec="libx264", pix_fmt_out="yuv420p",
                quality=self.quality, macro_block_size=1, ffmpeg_log_level="error",
            )
            self._gen.send(None)
        for frame in frames:
            self._gen.send(frame)
        self.num_frames += len(frames)

    def close(self) -> Path:
        """Finish the stream and move the file to its final name."""
        if self._gen is None:
            raise ValueError(f"no frames were written to {self.path}")
        self._gen.close()
        self._gen = None
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop a partly written file."""
        if self._gen is not None:
            self._gen.close()
            self._gen = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def count_mp4_frames(path: str | Path) -> tuple[int, float]:
    """Decode an mp4 and return ``(frame count, fps)`` (for checks and tests)."""
    import imageio.v3 as iio

    frames = iio.imread(Path(path), extension=".mp4")
    meta = iio.immeta(Path(path), extension=".mp4")
    return int(frames.shape[0]), float(meta.get("fps", 0.0))
