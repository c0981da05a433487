"""The training build wires the sigma tables as Self-Forcing does (docs/method.md §1.2)."""

from __future__ import annotations

from stream_r1.config import load_config
from stream_r1.distributed.env import WorldInfo
from stream_r1.distributed.fsdp import make_strategy
from stream_r1.train.build import build_training


def test_student_uses_generator_table_scores_use_their_own(tiny_checkpoints, tmp_path):
    cfg = load_config("tiny_cpu", [f"checkpoints.root={tiny_checkpoints}", "reward.mode=none"])
    setup = build_training(cfg, WorldInfo(), make_strategy("none"), tmp_path)
    d = setup.distiller
    assert d.student.shift == cfg.rollout.student_sigma_shift == 5.0
    # teacher and critic convert flow -> x0 on the wrapper-default shift-8 table, not the generator's
    assert d.teacher.shift == d.critic.shift == cfg.dmd.score_sigma_shift == 8.0
