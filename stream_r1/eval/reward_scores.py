"""VideoReward VQ / MQ / TA of finished videos (the reward model of ``stream_r1.reward``).

Frames are sampled uniformly at 2 fps with an even count, as VideoAlign's own inference does
(``model_config.json``: fps 2; method.md §2.2), which also bounds memory for 30 s / 60 s videos;
``stream_r1.reward`` resizes to VideoAlign's ``max_frame_pixels``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stream_r1.config import RunConfig

REWARD_FPS = 2.0
REWARD_AXES = ("VQ", "MQ", "TA")


def reward_checkpoint_path(cfg: RunConfig) -> Path:
    """``checkpoints.reward`` resolved against ``checkpoints.root`` (absolute paths kept)."""
    p = Path(cfg.checkpoints.reward)
    return p if p.is_absolute() else Path(cfg.checkpoints.root) / p


def reward_frame_indices(num_frames: int, fps: float, target_fps: float = REWARD_FPS) -> np.ndarray:
    """Uniform (linspace) frame indices at ``target_fps``, an even count >= 2 (Qwen2-VL temporal patch 2).

    Falls back to all frames (even count) when ``fps`` is unknown or the video is shorter than 2 samples.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if fps <= 0:
        count = num_frames
    else:
        count = round(num_frames / fps * target_fps)
    count = max(2, min(count, num_frames))
    count -= count % 2
    if count == 0:  # a single-frame video: repeat it (Qwen2-VL does the same for odd T)
        return np.zeros(2, dtype=np.int64)
    return np.linspace(0, num_frames - 1, num=count).round().astype(np.int64)


def load_reward_model(cfg: RunConfig, device: str = "cpu") -> Any:
    """Load VideoReward from ``checkpoints.reward`` (raises FileNotFoundError naming the path)."""
    import torch

    from stream_r1.reward.model import VideoRewardModel

    path = reward_checkpoint_path(cfg)
    if not path.exists():
        raise FileNotFoundError(
            f"VideoReward checkpoint {str(path)!r} does not exist; set checkpoints.root/checkpoints.reward, "
            "or --set eval.reward_scores=false to skip reward scores"
        )
    dtype = torch.bfloat16 if cfg.model.dtype == "bfloat16" and device != "cpu" else torch.float32
    return VideoRewardModel.from_checkpoint(path, dtype=dtype, device=device)


def score_video(model: Any, frames: np.ndarray, fps: float, prompt: str) -> dict[str, float]:
    """Reward scores of one decoded video.

    Args:
        model: a ``stream_r1.reward.model.VideoRewardModel``.
        frames: ``[T, H, W, 3]`` uint8 RGB.
        fps: the video's frame rate (for the 2 fps sampling).
        prompt: the generation prompt (the TA axis scores alignment with it).

    Returns:
        ``reward_vq``/``reward_mq``/``reward_ta`` (z-normalised with the checkpoint's means/stds),
        ``reward_overall`` (their mean) and ``reward_{vq,mq,ta}_raw`` (head logits).
    """
    import torch

    idx = reward_frame_indices(frames.shape[0], fps)
    x = torch.from_numpy(np.ascontiguousarray(frames[idx])).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # [T',3,H,W]
    with torch.no_grad():
        scores = model.score(x, prompt)
    out: dict[str, float] = {}
    for axis in REWARD_AXES:
        out[f"reward_{axis.lower()}"] = float(scores.z[axis])
        out[f"reward_{axis.lower()}_raw"] = float(scores.logits[axis])
    out["reward_overall"] = float(np.mean([out[f"reward_{a.lower()}"] for a in REWARD_AXES]))
    return out
