"""The world's VideoReward stage gives the same model in the build's second process as in the build itself."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from stream_r1.shapes.build import WORLD_FILE, size_overrides, videoreward_stage
from stream_r1.shapes.sizes import get_size
from stream_r1.utils.background import BackgroundCall
from stream_r1.utils.io import atomic_write_json, sha256_file


def _world_file(root: Path, ws) -> Path:
    root.mkdir()
    atomic_write_json(root / WORLD_FILE, {"size": ws.to_dict(), "seed": 0, "overrides": size_overrides(ws, root)})
    return root


def _hashes(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): sha256_file(p) for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_the_reward_stage_is_the_same_in_either_process(tmp_path: Path) -> None:
    ws = dataclasses.replace(get_size("ci"), reward_steps=3, reward_rubric_steps=1)
    here, there = _world_file(tmp_path / "here", ws), _world_file(tmp_path / "there", ws)
    rng = torch.get_rng_state()
    threads = torch.get_num_threads()
    ours = videoreward_stage(here, ws, 0)
    # In this process it leaves the global RNG and the thread count as they were (the next stages see no change).
    assert torch.equal(torch.get_rng_state(), rng) and torch.get_num_threads() == threads
    theirs = BackgroundCall(videoreward_stage, there, ws, 0).result()
    assert ours["videoreward"] == theirs["videoreward"]
    assert _hashes(here / "VideoReward") == _hashes(there / "VideoReward")
