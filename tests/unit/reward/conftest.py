"""Fixtures: one tiny VideoReward (official layout) per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_r1.reward.model import VideoRewardModel
from stream_r1.reward.tiny import write_tiny_videoreward


@pytest.fixture(scope="session")
def tiny_reward_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_videoreward(tmp_path_factory.mktemp("reward") / "VideoReward")


@pytest.fixture(scope="session")
def tiny_reward(tiny_reward_dir: Path) -> VideoRewardModel:
    return VideoRewardModel.from_checkpoint(tiny_reward_dir)
