"""Differentiable VideoReward preprocessing in torch (docs/method.md §3.3-A, §5 item 13).

Reproduces the Qwen2-VL video processor math (``do_resize`` through our own resize,
``do_rescale=False``, CLIP normalisation, temporal patch 2, 14x14 patches in the 2x2 merge order)
with plain torch ops so that gradients reach the frames and no torchvision is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from stream_r1.config.schema import RewardConfig

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
"""OpenAI CLIP per-channel mean (transformers ``OPENAI_CLIP_MEAN``)."""
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
"""OpenAI CLIP per-channel std (transformers ``OPENAI_CLIP_STD``)."""
PATCH_SIZE = 14
TEMPORAL_PATCH_SIZE = 2
MERGE_SIZE = 2
FACTOR = PATCH_SIZE * MERGE_SIZE
"""smart_resize factor: sides are multiples of 28 so 2x2 merged 14x14 patches tile each frame."""
PATCH_DIM = 3 * TEMPORAL_PATCH_SIZE * PATCH_SIZE * PATCH_SIZE
"""Columns of ``pixel_values_videos`` (1176)."""
FPS_MIN_FRAMES = 4
"""qwen-vl-utils floor on frames sampled at a target fps."""


@dataclass(frozen=True, slots=True)
class PreprocessOptions:
    """How rollout frames become VideoReward input (the ``reward`` config fields).

    Attributes:
        frames: ``all_even`` (SR1: every frame, drop the last when T is odd) or ``fps2`` (VideoAlign-native).
        video_fps: Frame rate of the decoded rollout (used by ``fps2``).
        min_pixels: smart_resize pixel floor per frame.
        max_pixels: smart_resize pixel budget per frame (200704 = 448^2 -> 336x588 at 480x832).
        target_fps: Sampling rate of ``fps2``.
    """

    frames: Literal["all_even", "fps2"] = "all_even"
    video_fps: float = 16.0
    min_pixels: int = 3136
    max_pixels: int = 200704
    target_fps: float = 2.0

    @classmethod
    def from_config(cls, cfg: RewardConfig) -> PreprocessOptions:
        """Options from the ``reward:`` config section."""
        return cls(frames=cfg.frames, video_fps=cfg.video_fps, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)


@dataclass(frozen=True, slots=True)
class RewardVideo:
    """Preprocessed reward input.

    Attributes:
        x: Normalised frames ``[T', 3, Hr, Wr]`` (the saliency target; graph to the input frames kept).
        frame_indices: Indices of the input frames that were scored, in order (length T', even).
        grid_thw: ``(T'/2, Hr/14, Wr/14)``.
    """

    x: torch.Tensor
    frame_indices: tuple[int, ...]
    grid_thw: tuple[int, int, int]

    @property
    def num_video_tokens(self) -> int:
        """Merged tokens the ViT emits: t * (h/2) * (w/2)."""
        t, h, w = self.grid_thw
        return t * (h // MERGE_SIZE) * (w // MERGE_SIZE)

    def grid_tensor(self) -> torch.Tensor:
        """``grid_thw`` as the ``[1, 3]`` long tensor the ViT takes."""
        return torch.tensor([self.grid_thw], dtype=torch.long, device=self.x.device)


def smart_resize(
    height: int, width: int, factor: int = FACTOR, min_pixels: int = 3136, max_pixels: int = 200704
) -> tuple[int, int]:
    """Target frame size: sides multiples of ``factor``, area in [min_pixels, max_pixels], aspect kept.

    Same rule as Qwen2-VL's ``smart_resize`` (336x588 for 480x832 with the VideoReward budget).

    Raises:
        ValueError: Non-positive sizes or an aspect ratio above 200.
    """
    if height < 1 or width < 1:
        raise ValueError(f"frame size {height}x{width} must be positive")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"frame aspect ratio {height}x{width} exceeds 200; VideoReward cannot take it")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def select_frames(num_frames: int, opts: PreprocessOptions) -> tuple[int, ...]:
    """Indices of the frames VideoReward scores (always an even count >= 2).

    ``all_even``: all frames, dropping the last when ``num_frames`` is odd (SR1; HF would repeat it).
    ``fps2``: qwen-vl-utils' rule: ``n = T / video_fps * 2`` clamped to [4, T], floored to even,
    indices ``round(linspace(0, T-1, n))``.

    Raises:
        ValueError: Fewer than 2 frames, or an unknown mode.
    """
    if num_frames < TEMPORAL_PATCH_SIZE:
        raise ValueError(f"VideoReward needs >= 2 frames (temporal patch 2), got T={num_frames}")
    if opts.frames == "all_even":
        return tuple(range(num_frames - num_frames % TEMPORAL_PATCH_SIZE))
    if opts.frames == "fps2":
        if opts.video_fps <= 0:
            raise ValueError(f"reward.video_fps={opts.video_fps} must be > 0 for frames=fps2")
        n = num_frames / opts.video_fps * opts.target_fps
        max_frames = num_frames - num_frames % TEMPORAL_PATCH_SIZE
        n = min(max(n, FPS_MIN_FRAMES), max_frames)
        n = max(TEMPORAL_PATCH_SIZE, int(n // TEMPORAL_PATCH_SIZE) * TEMPORAL_PATCH_SIZE)
        return tuple(int(i) for i in torch.linspace(0, num_frames - 1, n).round().long().tolist())
    raise ValueError(f"reward.frames={opts.frames!r}; allowed 'all_even' or 'fps2'")


def preprocess_frames(frames: torch.Tensor, opts: PreprocessOptions | None = None) -> RewardVideo:
    """Rollout frames -> normalised VideoReward frames (differentiable).

    Steps: ``(p+1)/2`` clamped to [0,1]; frame selection; bicubic antialiased resize to
    ``smart_resize(H, W)``; clamp [0,1]; CLIP mean/std.

    Args:
        frames: ``[T, 3, H, W]`` in [-1, 1] (VAE decoder output), any float dtype.
        opts: Preprocessing options (defaults: SR1 recipe).

    Returns:
        The :class:`RewardVideo` (``x`` float32).

    Raises:
        ValueError: Wrong rank or channel count, or see :func:`select_frames`.
    """
    opts = opts or PreprocessOptions()
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be [T, 3, H, W] in [-1, 1], got shape {tuple(frames.shape)}")
    idx = select_frames(frames.shape[0], opts)
    v = ((frames[list(idx)].float() + 1.0) / 2.0).clamp(0.0, 1.0)
    h, w = v.shape[-2:]
    hr, wr = smart_resize(h, w, FACTOR, opts.min_pixels, opts.max_pixels)
    if (hr, wr) != (h, w):
        v = F.interpolate(v, size=(hr, wr), mode="bicubic", antialias=True, align_corners=False).clamp(0.0, 1.0)
    mean = torch.tensor(CLIP_MEAN, dtype=v.dtype, device=v.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=v.dtype, device=v.device).view(1, 3, 1, 1)
    x = (v - mean) / std
    grid = (len(idx) // TEMPORAL_PATCH_SIZE, hr // PATCH_SIZE, wr // PATCH_SIZE)
    return RewardVideo(x=x, frame_indices=idx, grid_thw=grid)


def patchify(x: torch.Tensor) -> torch.Tensor:
    """Normalised frames -> ``pixel_values_videos`` rows in the processor's merge-block-major order.

    Rows are ordered (t, h/2, w/2, 2, 2) and columns (C, 2, 14, 14), exactly as the Qwen2-VL video
    processor's ``patchify`` (view + permute (0,1,4,7,5,8,3,2,6,9) with a batch axis). A pure
    permutation, so gradients map back to ``x`` one to one.

    Args:
        x: ``[T', 3, Hr, Wr]`` with T' even and Hr, Wr multiples of 28.

    Returns:
        ``[T'/2 * Hr/14 * Wr/14, 1176]``.

    Raises:
        ValueError: Shapes that do not tile into patches.
    """
    t, c, h, w = x.shape
    if t % TEMPORAL_PATCH_SIZE or h % FACTOR or w % FACTOR or c != 3:
        raise ValueError(f"x {tuple(x.shape)} must be [even T, 3, H, W] with H, W multiples of {FACTOR}")
    gt, gh, gw = t // TEMPORAL_PATCH_SIZE, h // PATCH_SIZE, w // PATCH_SIZE
    p = x.reshape(
        gt, TEMPORAL_PATCH_SIZE, c, gh // MERGE_SIZE, MERGE_SIZE, PATCH_SIZE, gw // MERGE_SIZE, MERGE_SIZE, PATCH_SIZE
    )
    p = p.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return p.reshape(gt * gh * gw, c * TEMPORAL_PATCH_SIZE * PATCH_SIZE * PATCH_SIZE)


def patch_rows_to_grid(values: torch.Tensor, grid_thw: tuple[int, int, int]) -> torch.Tensor:
    """Per-row values of ``pixel_values_videos`` -> the (t, h, w) patch grid (undo the merge order).

    Args:
        values: ``[t*h*w]`` one value per processor row (merge-block-major).
        grid_thw: ``(t, h, w)`` in 14x14 patches.

    Returns:
        ``[t, h, w]`` with each value at its true spatial patch.
    """
    t, h, w = grid_thw
    v = values.reshape(t, h // MERGE_SIZE, w // MERGE_SIZE, MERGE_SIZE, MERGE_SIZE)
    return v.permute(0, 1, 3, 2, 4).reshape(t, h, w)
