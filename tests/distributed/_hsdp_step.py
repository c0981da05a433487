"""Two optimizer steps of a tiny Wan critic against a frozen tiny Wan teacher over one global batch.

Run as one process (``python _hsdp_step.py OUT``: no process group, accumulation over the whole
global batch) or under ``torchrun --nproc_per_node 2`` (each rank one sample of every micro-step,
FSDP2 over the HSDP mesh given by ``--shard-size``). Rank 0 writes ``OUT`` (a weights-only .pt) with
the full initial and trained parameters, the pre-clip gradient norms and the meshes the networks ended up on.
Used by ``test_hsdp.py``.
"""

from __future__ import annotations

import argparse

import torch
from torch.distributed.tensor import DTensor

from stream_r1.distributed.collectives import _active
from stream_r1.distributed.env import init_distributed, shutdown_distributed
from stream_r1.distributed.fsdp import FSDP2Strategy
from stream_r1.distributed.state_dicts import full_model_state_dict
from stream_r1.models.tiny import build_tiny_transformer

GLOBAL_BATCH = 2  # samples per optimizer step
STEPS = 2


def _mesh_names(model: torch.nn.Module) -> list[str]:
    p = next(model.parameters())
    return list(p.device_mesh.mesh_dim_names) if isinstance(p, DTensor) else []


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--shard-size", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    world = init_distributed(prefer_cuda=False)
    try:
        critic = build_tiny_transformer(1).train().requires_grad_(True)
        init = {k: v.detach().clone() for k, v in critic.state_dict().items()}
        teacher = build_tiny_transformer(2, teacher=True).requires_grad_(False)
        strategy = FSDP2Strategy(param_dtype="float32", reduce_dtype="float32", shard_size=args.shard_size)
        critic = strategy.prepare_trainable(critic, checkpointing=False)
        teacher = strategy.prepare_frozen(teacher)
        opt = torch.optim.AdamW(critic.parameters(), lr=1e-3, betas=(0.0, 0.999), weight_decay=0.01)
        g = torch.Generator().manual_seed(0)
        data = [(torch.randn(1, 16, 3, 4, 4, generator=g), torch.rand(1, generator=g) * 1000,
                 torch.randn(1, 8, 32, generator=g)) for _ in range(STEPS * GLOBAL_BATCH)]
        accum = GLOBAL_BATCH // world.world_size
        mine = [i for i in range(len(data)) if i % world.world_size == world.rank]
        norms = []
        for step in range(STEPS):
            strategy.zero_grad(critic, opt)
            for micro in range(accum):
                x, t, text = data[mine[step * accum + micro]]
                with torch.no_grad():
                    target = teacher(x, t, text, return_dict=False)[0]
                pred = critic(x, t, text, return_dict=False)[0]
                strategy.set_gradient_sync(critic, micro == accum - 1)
                strategy.backward(critic, torch.nn.functional.mse_loss(pred, target) / accum)
            norms.append(strategy.optimizer_step(critic, opt, max_norm=10.0))
        params = full_model_state_dict(critic)
        if world.is_main:
            mesh = strategy._mesh
            torch.save({"params": params, "init": init, "norms": norms, "distributed": _active(),
                        "mesh_shape": list(mesh.shape) if mesh is not None else [],
                        "critic_mesh": _mesh_names(critic), "teacher_mesh": _mesh_names(teacher)}, args.out)
    finally:
        shutdown_distributed()


if __name__ == "__main__":
    main()
