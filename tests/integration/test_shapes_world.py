"""The ``ci`` shapes world: built by the project's code, loadable by every loader, and it has learned.

One session-scoped build (tests/conftest.py) serves every test (docs/benchmarks.md "Shapes world": 190-290 s on 2 cores at load 3-5,
mostly the VAE). The learning checks are ones untrained weights cannot pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream_r1.config.derived import checkpoint_path
from stream_r1.models.loading import inspect_generator_checkpoint, load_student, load_wan_transformer
from stream_r1.models.vae import WanVAE
from stream_r1.reward.model import VideoRewardModel
from stream_r1.shapes.build import MANIFEST, METRICS_FILE, PARTS, build_world, is_built, world_config
from stream_r1.shapes.sizes import get_size

# The build is about 3 minutes of CPU; on a loaded 2-core machine its wall time passed the suite's
# 600 s default once, so this module gets twice that.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def world(shapes_world_ci: Path) -> Path:
    return shapes_world_ci  # tests/conftest.py: one build per session, shared with the run-local test


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


def test_the_teacher_has_learnt_its_training_set(world: Path) -> None:
    loss = json.loads((world / METRICS_FILE).read_text(encoding="utf-8"))["teacher_train_loss"]
    # Flow-matching loss, last over first logged value: 0.23 and 0.32 at seeds 0 and 1 with the dim-128 teacher
    # (0.35-0.44 in three builds at dim 64); a teacher that learns nothing stays near 1.
    assert loss["last"] <= 0.6 * loss["first"], loss
    # Not asserted, because the ci world does not learn them reliably yet (docs/benchmarks.md "Shapes world"):
    # - the teacher's held-out colour accuracy is 0.50 at seeds 0 and 1: its VAE decodes two of the four
    #   colours wrong at this budget, so the figure moves in steps of 1/4 with the image phase's luck (0.5-1.0
    #   across seeds and float rounding); its direction accuracy is 0.08 at seeds 0 and 1 (chance 0.25), at
    #   dim 64 and dim 128 alike: it does not condition on the direction word;
    # - the VAE's held-out PSNR, 17.0-18.7 dB (object region 9.6-11.8 dB), is barely above what the black
    #   background alone scores (15.9 dB; object region 8.0 dB; the mean frame 16.4 / 8.8 dB).
