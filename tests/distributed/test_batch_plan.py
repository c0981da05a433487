"""The recipe's batch arithmetic at 1, 2 and 4 nodes of 8 GPUs (and the world sizes it refuses)."""

from __future__ import annotations

import pytest

from stream_r1.config import load_config
from stream_r1.distributed.batch import plan_batch, splittable_world_sizes
from stream_r1.train.schedule import TrainSchedule

RECIPE = "wan2.1_t2v_1.3b_stream_r1"


@pytest.mark.parametrize(("nodes", "accum", "ema_start"), [(1, 8, 200), (2, 4, 100), (4, 2, 50)])
def test_same_effective_batch_on_1_2_4_nodes(nodes, accum, ema_start):
    t = load_config(RECIPE).train
    plan = plan_batch(t, nodes * 8)
    assert (plan.grad_accum_steps, plan.micro_batch, plan.effective_batch) == (accum, 8 * nodes, 64)
    assert plan.grad_accum_steps * plan.micro_batch == t.global_batch_size * t.grad_accum_steps
    assert plan.ema_start_raw_step == ema_start
    # The EMA starts after the same optimizer step (25) at every node count.
    s = TrainSchedule(t.num_optimizer_steps, plan.grad_accum_steps, t.gen_update_every, plan.ema_start_raw_step)
    first = next(m for m in s.iter_from(0) if m.create_ema)
    assert (first.optimizer_step, first.window_end) == (24, True)


def test_reference_world_size_keeps_the_recipe_as_written():
    t = load_config(RECIPE).train
    plan = plan_batch(t, t.global_batch_size // t.batch_size_per_rank)
    assert (plan.grad_accum_steps, plan.ema_start_raw_step) == (t.grad_accum_steps, t.ema_start_raw_step)


@pytest.mark.parametrize("world", [3, 12, 128])
def test_unsplittable_world_size_names_values_and_fix(world):
    t = load_config(RECIPE).train
    with pytest.raises(ValueError) as e:
        plan_batch(t, world)
    msg = str(e.value)
    assert f"world size {world} cannot split" in msg and "train.grad_accum_steps=8" in msg
    assert "[1, 2, 4, 8, 16, 32, 64]" in msg and "\n" not in msg


def test_splittable_sizes_follow_batch_per_rank():
    t = load_config(RECIPE, ["train.batch_size_per_rank=2", "train.global_batch_size=16"]).train
    assert splittable_world_sizes(t, limit=64) == [1, 2, 4, 8, 16, 32, 64]
    assert plan_batch(t, 16).grad_accum_steps == 4
