"""VideoReward VQ / MQ / TA of finished videos (the reward model of ``stream_r1.reward``).

Frames are sampled VideoAlign-natively at 2 fps (``reward.preprocess.select_frames`` with
``frames="fps2"``, the qwen-vl-utils rule VideoAlign's inference uses; docs/method.md §2.2) and only those
frames are converted to a float tensor, which bounds memory for 30 s / 60 s videos; each frame is
resized to the ``reward.min_pixels``/``reward.max_pixels`` budget by ``stream_r1.reward``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stream_r1.config import RunConfig
from stream_r1.config.derived import checkpoint_path

REWARD_AXES = ("VQ", "MQ", "TA")


def load_reward_model(cfg: RunConfig, device: str = "cpu") -> Any:
    """Load VideoReward from ``checkpoints.reward`` (raises FileNotFoundError naming the path)."""
    import torch

    from stream_r1.reward.model import VideoRewardModel

    path = checkpoint_path(cfg, "reward")
    if not path.exists():
        raise FileNotFoundError(
            f"VideoReward checkpoint {str(path)!r} does not exist; set checkpoints.root/checkpoints.reward, "
            "or --set eval.reward_scores=false to skip reward scores"
        )
    dtype = torch.bfloat16 if cfg.model.dtype == "bfloat16" and device != "cpu" else torch.float32
    return VideoRewardModel.from_checkpoint(path, dtype=dtype, device=device)


def score_video(model: Any, frames: np.ndarray, fps: float, prompt: str, cfg: RunConfig) -> dict[str, float]:
    """Reward scores of one decoded video.

    Args:
        model: a ``stream_r1.reward.model.VideoRewardModel``.
        frames: ``[T, H, W, 3]`` uint8 RGB, ``T >= 2``.
        fps: the video's frame rate (for the 2 fps sampling).
        prompt: the generation prompt (the TA axis scores alignment with it).
        cfg: run config (``reward.min_pixels`` / ``reward.max_pixels``).

    Returns:
        ``reward_vq``/``reward_mq``/``reward_ta`` (z-normalised with the checkpoint's means/stds),
        ``reward_overall`` (their mean) and ``reward_{vq,mq,ta}_raw`` (head logits).
    """
    from stream_r1.eval.video_io import to_unit_range
    from stream_r1.reward.preprocess import PreprocessOptions, select_frames

    idx = list(select_frames(frames.shape[0], PreprocessOptions(frames="fps2", video_fps=fps)))
    x = to_unit_range(frames[idx])  # [T', 3, H, W]
    # The frames are already selected (even count): keep all of them in the model's preprocessing.
    opts = PreprocessOptions(frames="all_even", video_fps=fps, min_pixels=cfg.reward.min_pixels,
                             max_pixels=cfg.reward.max_pixels)
    scores = model.score(x, prompt, opts)
    out: dict[str, float] = {}
    for axis in REWARD_AXES:
        out[f"reward_{axis.lower()}"] = float(scores.z[axis])
        out[f"reward_{axis.lower()}_raw"] = float(scores.logits[axis])
    out["reward_overall"] = float(np.mean([out[f"reward_{a.lower()}"] for a in REWARD_AXES]))
    out["reward_frames"] = float(len(idx))
    return out
