"""Checkpoint write cost: rank-0 gather (full state dicts, one writer) vs sharded asynchronous DCP.

Run under torchrun (gloo on CPU, NCCL on GPU), e.g.::

    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 benchmarks/checkpoint_io.py --out /tmp/ckbench

Two FSDP2-sharded Wan transformers (a generator and a critic stand-in, the same layout as the
trainer's) take one AdamW step so every state exists; then each method writes a checkpoint of both
models and optimizers, alternating, ``--repeats`` times, in the same processes:

- ``gather``: today's full form: ``get_model/optimizer_state_dict(full_state_dict=True,
  cpu_offload=True)`` gathers everything to rank 0, which writes ``model.pt``/``optimizers.pt``,
  hashes them and publishes (:func:`stream_r1.train.checkpoint.save_checkpoint`).
- ``sharded``: :class:`stream_r1.train.checkpoint.CheckpointWriter`: each rank stages its own
  shards to host memory and writes them in DCP's background thread, hashes its own file, rank 0
  publishes the manifest.

Per method and rank: ``stall`` (seconds until training could continue), ``total`` (until the
checkpoint is published) and ``peak`` (host RSS above the rank's RSS before the save, sampled every
2 ms). Prints one JSON line per repeat and a Markdown table of medians on rank 0.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import shutil
import statistics
import threading
import time
from pathlib import Path

import torch
from diffusers import WanTransformer3DModel

from stream_r1.distributed.collectives import all_gather_object, barrier
from stream_r1.distributed.env import init_distributed, shutdown_distributed
from stream_r1.distributed.fsdp import FSDP2Strategy
from stream_r1.distributed.state_dicts import full_model_state_dict, full_optimizer_state_dict
from stream_r1.train.checkpoint import CheckpointPayload, CheckpointWriter, save_checkpoint

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class PeakRss:
    """Samples this process's RSS every ``interval`` seconds; ``peak`` is the maximum seen."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval, self.peak, self._stop = interval, _rss(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def _release_memory() -> None:
    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back so the next baseline is honest


def _nets(layers: int, dim_heads: int, device: torch.device, strategy: FSDP2Strategy):
    cfg = {"patch_size": (1, 2, 2), "num_attention_heads": dim_heads, "attention_head_dim": 64, "in_channels": 16,
           "out_channels": 16, "text_dim": 64, "freq_dim": 64, "ffn_dim": 4 * 64 * dim_heads, "num_layers": layers,
           "cross_attn_norm": True, "rope_max_seq_len": 64}
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = strategy.prepare_trainable(WanTransformer3DModel(**cfg).to(device).train(), checkpointing=False)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4, betas=(0.0, 0.999))
        x = torch.randn(1, 16, 3, 4, 4, device=device)
        net(x, torch.tensor([500.0], device=device), torch.randn(1, 8, 64, device=device),
            return_dict=False)[0].pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        out.append((net, opt))
    return out


def _gather(nets, out: Path, step: int, rank: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    models = {f"net{i}": full_model_state_dict(n) for i, (n, _) in enumerate(nets)}
    optims = {f"net{i}": full_optimizer_state_dict(n, o) for i, (n, o) in enumerate(nets)}
    save_checkpoint(out, step, CheckpointPayload(models=models, optimizers=optims, state={"optimizer_step": step}),
                    rank=rank, keep_last=1)
    elapsed = time.perf_counter() - t0
    return elapsed, elapsed  # synchronous: training waits for all of it


def _sharded(nets, writer: CheckpointWriter, strategy: FSDP2Strategy, step: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    sharded = {"model": {f"net{i}": strategy.model_state_dict(n) for i, (n, _) in enumerate(nets)},
               "optim": {f"net{i}": strategy.optimizer_state_dict(n, o)[0] for i, (n, o) in enumerate(nets)}}
    writer.save(step, CheckpointPayload(sharded=sharded, state={"optimizer_step": step}))
    stall = time.perf_counter() - t0
    writer.wait()
    barrier()
    return stall, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="scratch directory (deleted first)")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=8, help="attention heads of 64 (model width = 64 x heads)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    world = init_distributed()
    try:
        strategy = FSDP2Strategy(param_dtype="float32", reduce_dtype="float32")
        nets = _nets(args.layers, args.heads, world.device, strategy)
        params = sum(p.numel() for n, _ in nets for p in n.parameters())
        if world.is_main:
            shutil.rmtree(args.out, ignore_errors=True)
        barrier()
        writer = CheckpointWriter(args.out / "sharded", rank=world.rank, keep_last=1)
        rows: dict[str, list[dict[str, float]]] = {"gather": [], "sharded": []}
        for rep in range(args.repeats):
            for method in ("gather", "sharded") if rep % 2 == 0 else ("sharded", "gather"):
                _release_memory()
                barrier()
                base = _rss()
                with PeakRss() as mem:
                    if method == "gather":
                        stall, total = _gather(nets, args.out / "gather", rep + 1, world.rank)
                    else:
                        stall, total = _sharded(nets, writer, strategy, rep + 1)
                mine = {"stall": stall, "total": total, "peak_mb": (mem.peak - base) / 2**20}
                every = all_gather_object(mine)
                if world.is_main:
                    print(json.dumps({"method": method, "repeat": rep, "ranks": every}))
                rows[method].append({f"{k}_r{r}": v for r, d in enumerate(every) for k, v in d.items()})
        if world.is_main:
            size = {m: sum(f.stat().st_size for f in (args.out / m).rglob("*") if f.is_file()) / 2**20
                    for m in rows}
            print(f"\n{params / 1e6:.1f} M parameters in 2 models (fp32) + AdamW states, world size "
                  f"{world.world_size}, {world.device.type}; medians of {args.repeats}\n")
            cols = list(rows["gather"][0])
            print("| method | on disk MB | " + " | ".join(cols) + " |")
            print("|---|---:|" + "---:|" * len(cols))
            for m, rs in rows.items():
                med = [statistics.median(r[c] for r in rs) for c in cols]
                print(f"| {m} | {size[m]:.0f} | " + " | ".join(f"{v:.2f}" for v in med) + " |")
    finally:
        shutdown_distributed()


if __name__ == "__main__":
    main()
