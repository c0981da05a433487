"""The training build wires the sigma tables as Self-Forcing does (docs/method.md §1.2)."""

from __future__ import annotations

import torch

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


def test_full_cache_without_sink_builds_the_same_student_for_training_and_generation(tiny_checkpoints, tmp_path):
    """One composition root: training's student and generation's student have one geometry."""
    from stream_r1.method.build import load_student_transformer, student_denoiser

    cfg = load_config("tiny_cpu", [f"checkpoints.root={tiny_checkpoints}", "reward.mode=none",
                                   "model.local_attn_frames=-1", "model.sink_frames=0"])
    train_student = build_training(cfg, WorldInfo(), make_strategy("none"), tmp_path).distiller.student
    gen_student = student_denoiser(cfg, load_student_transformer(cfg, None, use_ema=False, dtype=torch.float32,
                                                                 device="cpu"))
    geometry = ("shift", "frames_per_block", "local_attn_frames", "sink_frames", "sink_ema_alpha", "attention_backend")
    assert [getattr(train_student, a) for a in geometry] == [getattr(gen_student, a) for a in geometry]
    assert (train_student.local_attn_frames, train_student.sink_frames) == (-1, 0)
