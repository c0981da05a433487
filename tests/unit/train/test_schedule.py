"""The reference update schedule (docs/method.md §3.2 item 8): which raw steps touch which optimizer."""

from __future__ import annotations

import pytest

from stream_r1.train.schedule import TrainSchedule


def test_tiny_schedule_exact():
    s = TrainSchedule(num_optimizer_steps=4, grad_accum_steps=2, gen_update_every=2, ema_start_raw_step=2)
    steps = list(s.iter_from(0))
    assert s.total_raw_steps == 8
    assert [m.optimizer_step for m in steps] == [0, 0, 1, 1, 2, 2, 3, 3]
    # generator accumulates over the whole window of optimizer steps 0 and 2
    assert [m.raw_step for m in steps if m.train_generator] == [0, 1, 4, 5]
    assert [m.raw_step for m in steps if m.window_start] == [0, 2, 4, 6]
    # critic steps at every window end; generator steps at the end of its windows
    assert [m.raw_step for m in steps if m.window_end] == [1, 3, 5, 7]
    assert [m.raw_step for m in steps if m.window_end and m.train_generator] == [1, 5]
    assert [m.raw_step for m in steps if m.create_ema] == [1]


def test_full_recipe_counts():
    s = TrainSchedule(num_optimizer_steps=1000, grad_accum_steps=8, gen_update_every=5, ema_start_raw_step=200)
    steps = list(s.iter_from(0))
    assert len(steps) == 8000
    assert sum(m.window_end for m in steps) == 1000  # critic optimizer steps
    assert sum(m.window_end and m.train_generator for m in steps) == 200  # generator optimizer steps
    assert sum(m.train_generator for m in steps) == 1600  # generator micro-steps (8 per window)
    gen_windows = sorted({m.optimizer_step for m in steps if m.train_generator})
    assert gen_windows[:3] == [0, 5, 10] and all(o % 5 == 0 for o in gen_windows)
    # EMA created once the 200th micro-step completes = optimizer step 25 (SR1)
    (create,) = [m for m in steps if m.create_ema]
    assert create.raw_step == 199 and (create.raw_step + 1) // 8 == 25
    assert sum(m.window_end and m.train_generator for m in steps if m.optimizer_step < 25) == 5


def test_resume_from_window_start():
    s = TrainSchedule(num_optimizer_steps=4, grad_accum_steps=2, gen_update_every=2, ema_start_raw_step=2)
    assert [m.raw_step for m in s.iter_from(4)] == [4, 5, 6, 7]
    (create,) = [m for m in s.iter_from(0) if m.create_ema]
    assert create.raw_step == 1  # the shadow exists once 2 micro-steps have completed


def test_bad_values():
    with pytest.raises(ValueError, match="grad_accum_steps"):
        TrainSchedule(num_optimizer_steps=1, grad_accum_steps=0, gen_update_every=1, ema_start_raw_step=0)
    s = TrainSchedule(num_optimizer_steps=1, grad_accum_steps=1, gen_update_every=1, ema_start_raw_step=0)
    with pytest.raises(ValueError, match="raw_step=1"):
        s.micro(1)
