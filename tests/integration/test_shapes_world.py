"""The ``ci`` shapes world: built by the project's code, loadable by every loader, and it has learned.

One module-scoped build serves every test (docs/benchmarks.md "Shapes world": about 10 minutes on a
loaded 2-core machine, mostly the VAE). The learning check is one random weights cannot pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stream_r1.config.derived import checkpoint_path
from stream_r1.models.loading import inspect_generator_checkpoint, load_student, load_wan_transformer
from stream_r1.models.vae import WanVAE
from stream_r1.reward.model import VideoRewardModel
from stream_r1.shapes.build import MANIFEST, METRICS_FILE, PARTS, build_world, is_built, world_config
from stream_r1.shapes.sampling import sample_teacher, score_videos
from stream_r1.shapes.sizes import get_size
from stream_r1.shapes.world import split_prompts

# The build is about 3 minutes of CPU; on a loaded 2-core machine its wall time passed the suite's
# 600 s default once, so this module gets twice that.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(2)
    return build_world(tmp_path_factory.mktemp("shapes") / "world", "ci", seed=0)


def test_build_is_complete_cached_and_in_the_real_formats(world: Path) -> None:
    manifest = json.loads((world / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["parts"] == list(PARTS)
    assert is_built(world, get_size("ci"), 0) and not is_built(world, get_size("ci"), 1)
    stamp = (world / MANIFEST).stat().st_mtime_ns
    build_world(world, "ci", seed=0)  # verified: nothing is rebuilt
    assert (world / MANIFEST).stat().st_mtime_ns == stamp
    cfg = world_config(world)
    assert load_wan_transformer(checkpoint_path(cfg, "teacher"), causal=False).config.num_layers == 2
    assert inspect_generator_checkpoint(checkpoint_path(cfg, "student_init")) is not None
    load_student(checkpoint_path(cfg, "base"), checkpoint_path(cfg, "student_init"), use_ema=False)
    assert WanVAE.from_pretrained(checkpoint_path(cfg, "vae")).z_dim == 16
    reward = VideoRewardModel.from_checkpoint(checkpoint_path(cfg, "reward"))
    assert set(reward.reward_token_ids) == {"VQ", "MQ", "TA"}
    metrics = json.loads((world / METRICS_FILE).read_text(encoding="utf-8"))
    assert {"vae", "videoreward", "teacher_held_out", "ode_init_held_out"} <= set(metrics)


def test_teacher_draws_the_prompted_colour_on_held_out_prompts(world: Path, tmp_path: Path) -> None:
    cfg = world_config(world)
    _, held = split_prompts()
    scores = score_videos(sample_teacher(cfg, held + held, 7, tmp_path / "text"))
    # 24 videos of the 12 combinations the teacher never saw. Chance is 1/4: a random teacher reaches
    # 12 of 24 with probability 0.2 %; the ci teacher measured 0.75 on 12 videos at two seeds, and at
    # that rate falls below 12 of 24 with probability 0.3 %. (Its direction is not learnt yet at the
    # ci budget, docs/benchmarks.md, so it is not asserted.)
    assert scores["color"] >= 0.5, scores
