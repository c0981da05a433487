"""Save a sharded checkpoint at one world size and load it at another (run by test_reshard.py).

``save OUT``: under torchrun, one AdamW step of a tiny Wan critic sharded with FSDP2 over all ranks,
then :class:`CheckpointWriter` writes the sharded checkpoint; rank 0 also writes ``OUT/reference.pt``
(the full gathered model and optimizer state, the old rank-0 path). ``load OUT``: one process, a
fresh unsharded critic and optimizer, filled from the checkpoint with :func:`load_sharded`; writes
``OUT/loaded.pt`` in the same full form.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from stream_r1.distributed.env import init_distributed, shutdown_distributed
from stream_r1.distributed.fsdp import FSDP2Strategy
from stream_r1.distributed.state_dicts import full_model_state_dict, full_optimizer_state_dict
from stream_r1.models.tiny import build_tiny_transformer
from stream_r1.train.checkpoint import CheckpointPayload, CheckpointWriter, find_resume_checkpoint, load_sharded


def _setup(seed: int):
    strategy = FSDP2Strategy(param_dtype="float32", reduce_dtype="float32")
    net = strategy.prepare_trainable(build_tiny_transformer(seed).train().requires_grad_(True), checkpointing=False)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, betas=(0.0, 0.999), weight_decay=0.01)
    return strategy, net, opt


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    world = init_distributed(prefer_cuda=False)
    try:
        if mode == "save":
            strategy, net, opt = _setup(1)
            g = torch.Generator().manual_seed(world.rank)
            x, t, text = torch.randn(1, 16, 3, 4, 4, generator=g), torch.rand(1, generator=g) * 1000, torch.randn(1, 8, 32, generator=g)
            strategy.backward(net, net(x, t, text, return_dict=False)[0].pow(2).mean())
            strategy.optimizer_step(net, opt, 10.0)
            payload = CheckpointPayload(
                sharded={"model": {"critic": strategy.model_state_dict(net)},
                         "optim": {"critic": strategy.optimizer_state_dict(net, opt)[0]}},
                state={"optimizer_step": 1, "world_size": world.world_size}, rank_state={})
            writer = CheckpointWriter(out, rank=world.rank, keep_last=1)
            writer.save(1, payload)
            writer.wait()
            ref = {"model": full_model_state_dict(net), "optim": full_optimizer_state_dict(net, opt)}
            if world.is_main:
                torch.save(ref, out / "reference.pt")
        else:
            strategy, net, opt = _setup(2)  # other initial weights: everything must come from the checkpoint
            template = {"model": {"critic": strategy.model_state_dict(net)},
                        "optim": {"critic": strategy.optimizer_state_dict(net, opt)[0]}}
            load_sharded(find_resume_checkpoint(out), template)
            strategy.load_model_state_dict(net, template["model"]["critic"])
            strategy.load_optimizer_state_dict(net, opt, template["optim"]["critic"], None)
            torch.save({"model": full_model_state_dict(net), "optim": full_optimizer_state_dict(net, opt)},
                       out / "loaded.pt")
    finally:
        shutdown_distributed()


if __name__ == "__main__":
    main()
