"""World size 1 without a process group: collectives are identities, strategies leave modules alone."""

from __future__ import annotations

import pytest
import torch

from stream_r1.distributed.collectives import all_gather_object, all_reduce_mean, barrier, broadcast_from_rank0
from stream_r1.distributed.env import init_distributed, world_size_from_env
from stream_r1.distributed.fsdp import FSDP2Strategy, make_strategy
from stream_r1.distributed.state_dicts import parameter_digest


def test_collectives_without_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    world = init_distributed(prefer_cuda=False)
    assert (world.rank, world.world_size, world.distributed, world.is_main) == (0, 1, False, True)
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(broadcast_from_rank0(t), t) and broadcast_from_rank0({"k": 3}) == {"k": 3}
    out = all_reduce_mean(t)
    assert torch.equal(out, t) and out is not t
    assert all_gather_object([1, 2]) == [[1, 2]]
    barrier()


def test_world_size_env(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "x")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        world_size_from_env()


def test_strategies_at_world_size_one():
    m = torch.nn.Linear(2, 2)
    d0 = parameter_digest(m)
    s = FSDP2Strategy(param_dtype="bfloat16")
    assert s.prepare_trainable(m, checkpointing=False) is m  # no process group: nothing to shard
    m(torch.randn(3, 2)).pow(2).sum().backward()
    norm = s.clip_grad_norm(m, 1e-3)
    assert norm > 1e-3 and torch.nn.utils.get_total_norm([p.grad for p in m.parameters()]) <= 1e-3 + 1e-6
    assert parameter_digest(m) == d0
    assert make_strategy("none").name == "none"
    with pytest.raises(ValueError, match="fsdp2"):  # no DeepSpeed installed, or an unsupported ZeRO stage
        make_strategy("deepspeed", zero_stage=1)
    with pytest.raises(ValueError, match="one of"):
        make_strategy("ddp")
