"""Read and write mp4 videos as uint8 RGB arrays (imageio + imageio-ffmpeg; no cv2, no torchvision)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif")


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """Decode every frame of a video.

    Args:
        path: a video file readable by ffmpeg.

    Returns:
        ``(frames, fps)``: frames ``[T, H, W, 3]`` uint8 RGB in [0, 255] and the container's
        frame rate (0.0 when unknown).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file decodes to no frames or not to RGB frames.
    """
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {str(path)!r} does not exist")
    try:
        frames = np.asarray(iio.imread(path, extension=path.suffix or ".mp4"))
        meta = iio.immeta(path, extension=path.suffix or ".mp4")
    except (OSError, RuntimeError, IndexError) as e:  # imageio's ffmpeg errors
        raise ValueError(f"cannot decode video {str(path)!r}: {e}") from e
    if frames.ndim == 3:  # greyscale -> RGB
        frames = np.repeat(frames[..., None], 3, axis=-1)
    if frames.ndim != 4 or frames.shape[-1] not in (3, 4) or frames.shape[0] == 0:
        raise ValueError(f"video {str(path)!r} decoded to shape {frames.shape}; expected [T, H, W, 3] with T >= 1")
    fps = float(meta.get("fps", 0.0) or 0.0)
    return np.ascontiguousarray(frames[..., :3].astype(np.uint8, copy=False)), fps


def write_video(path: str | Path, frames: np.ndarray, fps: float = 16.0) -> Path:
    """Encode ``frames [T, H, W, 3]`` uint8 RGB as H.264 mp4 (yuv420p, near-lossless quality).

    Odd sizes are allowed (``macro_block_size=1``). Used by the tests and by tools that write
    synthetic videos; generation itself writes its mp4s in ``stream_r1.sample``.
    """
    import imageio.v3 as iio

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, frames, extension=".mp4", fps=fps, codec="libx264", quality=10, macro_block_size=1)
    return path


def to_unit_range(frames: np.ndarray) -> torch.Tensor:
    """Decoded frames ``[T, H, W, 3]`` uint8 -> ``[T, 3, H, W]`` float32 in ``[-1, 1]`` (the library's pixel layout)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8_frames(video: object) -> np.ndarray:
    """Pixel video ``[T, 3, H, W]`` in [-1, 1] (torch or numpy; library layout) -> uint8 ``[T, H, W, 3]``."""
    arr = video.detach().float().cpu().numpy() if hasattr(video, "detach") else np.asarray(video, dtype=np.float32)
    if arr.ndim != 4 or arr.shape[1] != 3:
        raise ValueError(f"expected a pixel video [T, 3, H, W] in [-1, 1], got shape {arr.shape}")
    arr = (np.clip(arr, -1.0, 1.0) + 1.0) * 127.5
    return np.ascontiguousarray(np.round(arr).astype(np.uint8).transpose(0, 2, 3, 1))


def list_videos(directory: str | Path) -> list[Path]:
    """Video files directly under ``directory``, sorted by name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"videos directory {str(directory)!r} does not exist")
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
