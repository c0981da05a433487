"""The VideoReward training batch: one ViT pass per distinct video, labels measured once per video."""

from __future__ import annotations

from pathlib import Path

import torch

from stream_r1.reward.preprocess import PreprocessOptions, preprocess_frames
from stream_r1.shapes.data import Clip, render_clips
from stream_r1.shapes.reward import (
    GROUP,
    BatchedReward,
    RewardRecipe,
    build_reward_model,
    distinct_videos,
    scene_group,
    world_labels,
)
from stream_r1.shapes.vae import _RenderCache
from stream_r1.shapes.world import split_prompts

OPTS = PreprocessOptions(min_pixels=3136, max_pixels=3136)


def _batch() -> list:
    train, _ = split_prompts()
    return [ex for seed in (0, 1, 2, 3) for ex in scene_group(train, seed, 9, 32)]  # quality, alignment, ...


def test_an_alignment_group_is_one_video_and_a_quality_group_four() -> None:
    videos, index = distinct_videos(_batch(), OPTS)
    assert len(videos) == 2 * GROUP + 2
    assert index.tolist() == [0, 1, 2, 3, 4, 4, 4, 4, 5, 6, 7, 8, 9, 9, 9, 9]


def test_labels_measured_once_are_the_labels_of_each_row() -> None:
    for ex in _batch():
        assert ex.labels == world_labels(ex.frames, ex.prompt)


def test_scoring_distinct_videos_gives_every_row_its_own_videos_logits(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_reward_model(tmp_path / "VideoReward", 0, RewardRecipe())
    batch = _batch()
    prompts = [ex.prompt for ex in batch]
    scorer = BatchedReward(model, "short")
    with torch.no_grad():
        per_row = scorer([preprocess_frames(ex.frames, OPTS) for ex in batch], prompts)
        videos, index = distinct_videos(batch, OPTS)
        shared = scorer(videos, prompts, index)
    # Same function; only the batch of the ViT's float32 matmuls differs (rounding at ~1e-7 of values of ~1).
    torch.testing.assert_close(shared, per_row, rtol=1e-5, atol=1e-5)
    assert per_row.std(dim=0).min() > 1e-4  # the rows differ, so a wrong index would show


def test_the_render_cache_renders_what_render_clips_does_and_stays_bounded() -> None:
    clips = [Clip("a red circle moving right", s) for s in range(3)]
    cache = _RenderCache(5, 32, capacity=2)
    assert torch.equal(cache(clips + clips[:1]), render_clips(clips + clips[:1], 5, 32))
    assert len(cache.clips) == 2
