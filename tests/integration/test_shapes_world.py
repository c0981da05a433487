"""The ``ci`` shapes world: built by the project's code, loadable by every loader, and it has learned.

One module-scoped build (about 2 minutes on 2 cores) serves every test. The learning checks are
ones random weights cannot pass: chance is 1/4 for colour and direction.
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
from stream_r1.shapes.sampling import sample_student, sample_teacher, score_videos
from stream_r1.shapes.sizes import get_size
from stream_r1.shapes.world import split_prompts

pytestmark = pytest.mark.slow


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


def test_teacher_draws_the_prompted_colour_and_direction_on_held_out_prompts(world: Path, tmp_path: Path) -> None:
    cfg = world_config(world)
    _, held = split_prompts()
    scores = score_videos(sample_teacher(cfg, held, 7, tmp_path / "text"))
    # 12 held-out combinations the teacher never saw; chance is 0.25 for each attribute.
    assert scores["color"] >= COLOR_MIN, scores
    assert scores["direction"] >= DIRECTION_MIN, scores


def test_short_distillation_moves_the_student_towards_the_teacher(world: Path, tmp_path: Path) -> None:
    from stream_r1.train.entry import run_training

    cfg = world_config(world, [f"train.num_optimizer_steps={DISTILL_STEPS}", "reward.mode=none", "reward.intra=false"])
    _, held = split_prompts()
    teacher = score_videos(sample_teacher(cfg, held, 3, tmp_path / "text"))["total"]
    before = score_videos(sample_student(cfg, None, held, 3, tmp_path / "text"))["total"]
    run_training(cfg, tmp_path / "run")
    after = score_videos(sample_student(cfg, tmp_path / "run" / "final" / "model.pt", held, 3, tmp_path / "text"))
    assert abs(teacher - after["total"]) < abs(teacher - before), (teacher, before, after)


COLOR_MIN = 0.6
DIRECTION_MIN = 0.6
DISTILL_STEPS = 30
