"""Step cost of the reward terms: plain DMD vs Reward Forcing vs Stream-R1 (one / two reward passes).

One generator step = self-forcing rollout (grad at the exit step) + DMD direction (critic + guided
teacher) + [VAE decode + VideoReward scoring/saliency + weights] + backward + AdamW step, on the
tiny models of docs/method.md §6.1 in a single process (world size 1).

Time: one worker builds the networks once (one distiller per mode sharing them) and runs the modes
round-robin, so every mode sees the same machine load, exit steps (k cycles 0..3) and seeds; the
median per mode is reported as process CPU seconds (with 1 torch thread: the work done, robust to
other processes sharing the cores) and as wall seconds. Memory: on CUDA the peak ``torch.cuda.max_memory_allocated`` above the
pre-step allocation (from the timing worker); on CPU each mode runs again in its own fresh worker
with glibc returning every allocation >= 64 KiB to the OS on free, and the peak resident set size
above the pre-step RSS is sampled every 0.5 ms by a thread (coarse: compare ratios, not bytes).

Usage::

    .venv/bin/python benchmarks/step_cost.py                     # tiny config, CPU, markdown table
    .venv/bin/python benchmarks/step_cost.py --repeats 8 --json out.json
    .venv/bin/python benchmarks/step_cost.py --device cuda --frames 21 --latent-hw 16 16
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from stream_r1.utils.cpu_memory import CPU_ALLOCATOR_DEFAULTS

if TYPE_CHECKING:
    import torch

    from stream_r1.method.distiller import DistillBatch, StreamR1Distiller

MODES: dict[str, dict[str, object]] = {
    # Self-Forcing DMD: no reward model, no VAE decode.
    "dmd": {"mode": "none"},
    # Reward Forcing (Re-DMD): exp(beta * MQ), no intra weighting, one scoring pass without saliency.
    "reward_forcing": {"mode": "MQ", "intra": False},
    # Stream-R1 (this library's default): logits and the three saliency gradients from ONE reward forward.
    "stream_r1": {"mode": "BalancedOverall", "intra": True, "reward_passes": 1},
    # Stream-R1 reference mode: SR1's separate scalar pass + saliency pass, patch-level saliency with its
    # row order, trilinear mappings (docs/method.md §3.2 item 4).
    "stream_r1_reference": {
        "mode": "BalancedOverall",
        "intra": True,
        "reward_passes": 2,
        "saliency_backward": "per_axis",
        "saliency_space": "patch_reference",
        "patch_order": "sr1_naive",
        "spatial_mapping": "trilinear_reference",
        "temporal_mapping": "trilinear_reference",
    },
}


class _RssPeak:
    """Samples this process's resident set size in a background thread (CPU peak memory)."""

    def __init__(self, interval_s: float = 0.0005) -> None:
        self._interval = interval_s
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self._interval)

    def __enter__(self) -> _RssPeak:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def _build(
    args: argparse.Namespace, modes: list[str], workdir: Path
) -> tuple[dict[str, StreamR1Distiller], DistillBatch, torch.nn.Module]:
    """Tiny networks shared by one distiller per mode (+ VAE, VideoReward, a balancer per mode), one batch."""
    import torch

    from stream_r1.config import load_config
    from stream_r1.method.build import build_distiller
    from stream_r1.method.distiller import DistillBatch
    from stream_r1.models.causal_wan import CausalWanTransformer
    from stream_r1.models.tiny import TINY_TEXT_DIM, TINY_TEXT_LEN, build_tiny_transformer, build_tiny_vae
    from stream_r1.models.vae import WanVAE
    from stream_r1.reward.model import VideoRewardModel
    from stream_r1.reward.tiny import write_tiny_videoreward

    device = torch.device(args.device)
    cfg = load_config(
        "tiny_cpu",
        [
            f"rollout.num_frames={args.frames}",
            f"rollout.latent_height={args.latent_hw[0]}",
            f"rollout.latent_width={args.latent_hw[1]}",
            f"eval.num_frames={args.frames}",
        ],
    )
    stock = build_tiny_transformer(0)
    student = CausalWanTransformer.from_config(stock.config)
    student.load_state_dict(stock.state_dict(), strict=True)
    student = student.to(device)
    critic = build_tiny_transformer(1).to(device)
    teacher = build_tiny_transformer(2, teacher=True).to(device)
    teacher.requires_grad_(False)
    needs_reward = any(MODES[m]["mode"] != "none" for m in modes)
    vae = WanVAE(build_tiny_vae(0).to(device)) if needs_reward else None
    reward_model = (
        VideoRewardModel.from_checkpoint(
            write_tiny_videoreward(workdir / "VideoReward"), device=device,
            gradient_checkpointing={"on": True, "off": False}[args.reward_checkpointing],
        )
        if needs_reward
        else None
    )
    distillers = {}
    for mode in modes:
        mode_cfg = dataclasses.replace(cfg, reward=dataclasses.replace(cfg.reward, **MODES[mode]))  # type: ignore[arg-type]
        enabled = mode_cfg.reward.enabled
        # The same composition root as training (one distiller per mode over the shared networks).
        distillers[mode] = build_distiller(
            mode_cfg, student, critic, teacher, vae=vae if enabled else None, reward_model=reward_model if enabled else None
        )
    gen = torch.Generator().manual_seed(0)
    text = torch.randn(1, TINY_TEXT_LEN, TINY_TEXT_DIM, generator=gen).to(device)
    neg = torch.randn(1, TINY_TEXT_LEN, TINY_TEXT_DIM, generator=gen).to(device)
    batch = DistillBatch(prompts=["a red fox trotting through fresh snow at dawn"], text_emb=text, negative_emb=neg)
    return distillers, batch, student


def _worker(args: argparse.Namespace, modes: list[str]) -> dict[str, dict[str, object]]:
    """Run ``args.repeats`` generator steps per mode, round-robin over modes (same load for each).

    Returns:
        ``{mode: {"step_s": [wall s], "cpu_s": [process CPU s], "peak_bytes": [...]}}`` (peaks above the
        pre-step level; on CPU only with ``--measure-memory``).
    """
    import torch

    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    with tempfile.TemporaryDirectory() as tmp:
        distillers, batch, student = _build(args, modes, Path(tmp))
        opt = torch.optim.AdamW(student.parameters(), lr=1e-5, betas=(0.0, 0.999))

        def step(mode: str, i: int) -> None:
            opt.zero_grad(set_to_none=True)
            # Same exit-step sequence and seeds for every mode (k cycles 0..3).
            loss = distillers[mode].generator_loss(batch, i % 4, torch.Generator().manual_seed(1000 + i)).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        for i in range(args.warmup):
            for mode in modes:
                step(mode, i)
        out: dict[str, dict[str, list]] = {m: {"step_s": [], "cpu_s": [], "peak_bytes": []} for m in modes}
        for i in range(args.repeats):
            for mode in modes:
                rec = out[mode]
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    base = torch.cuda.memory_allocated()
                t0, c0 = time.perf_counter(), time.process_time()
                if args.measure_memory and not cuda:
                    with _RssPeak() as rss:
                        base = rss.rss()
                        step(mode, i)
                    rec["peak_bytes"].append(rss.peak - base)
                else:
                    step(mode, i)
                if cuda:
                    torch.cuda.synchronize()
                    rec["peak_bytes"].append(torch.cuda.max_memory_allocated() - base)
                rec["step_s"].append(time.perf_counter() - t0)
                # CPU seconds of this process: robust to other processes sharing the cores (wall time is not).
                rec["cpu_s"].append(time.process_time() - c0)
    return out  # type: ignore[return-value]


def _table(results: list[dict[str, object]]) -> str:
    """Markdown table with ratios to the plain-DMD row."""
    base = next(r for r in results if r["mode"] == "dmd")
    lines = [
        "| mode | CPU s / step | / DMD | wall s / step | / DMD | peak memory (MiB) | / DMD |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c, t, m = float(r["cpu_s_median"]), float(r["step_s_median"]), int(r["peak_bytes"])
        lines.append(
            f"| {r['mode']} | {c:.3f} | {c / float(base['cpu_s_median']):.2f}x | {t:.3f} | "
            f"{t / float(base['step_s_median']):.2f}x | {m / 2**20:.1f} | {m / max(int(base['peak_bytes']), 1):.2f}x |"
        )
    return "\n".join(lines) + "\n"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--frames", type=int, default=6, help="latent frames per rollout (multiple of 3)")
    p.add_argument("--latent-hw", type=int, nargs=2, default=(4, 4), metavar=("H", "W"), help="latent size")
    p.add_argument("--repeats", type=int, default=4, help="timed generator steps per mode")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: CPU seconds = work done)")
    p.add_argument(
        "--reward-checkpointing", choices=("on", "off"), default="on",
        help="checkpoint the VideoReward's ViT/LLM blocks in the saliency pass: on = SR1's setting and the library's "
        "default on CUDA (10k video tokens do not fit otherwise); off = the library's CPU default",
    )
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES), help="modes to run")
    p.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--measure-memory", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.frames % 3:
        p.error(f"--frames={args.frames} must be a multiple of 3 (model.frames_per_block)")
    if "dmd" not in args.modes:
        p.error("--modes must include dmd (the baseline of the ratios)")
    return args


def _spawn(args: argparse.Namespace, modes: list[str], *, memory: bool) -> dict[str, dict[str, list]]:
    """Run a worker process over ``modes``; ``memory`` = CPU peak-RSS pass (glibc returns big blocks on free)."""
    worker_argv = [
        *("--device", args.device, "--frames", str(args.frames), "--latent-hw", *map(str, args.latent_hw)),
        *("--repeats", str(args.repeats), "--warmup", str(args.warmup), "--threads", str(args.threads)),
        *("--reward-checkpointing", args.reward_checkpointing, "--worker", ",".join(modes)),
        *(("--measure-memory",) if memory else ()),
    ]
    if memory:
        # Every allocation >= 64 KiB is mmap'ed and unmapped on free (in 4 KB pages), so RSS follows live tensors.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0", "THP_MEM_ALLOC_ENABLE": "0"}
    else:
        env = {**CPU_ALLOCATOR_DEFAULTS, **os.environ}  # timed as the stream-r1 command runs
    out = subprocess.run([sys.executable, __file__, *worker_argv], check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Time all modes round-robin in one worker; on CPU measure each mode's peak memory in its own fresh worker."""
    args = _parse(argv)
    if args.worker:
        print(json.dumps(_worker(args, args.worker.split(","))))
        return 0
    timing = _spawn(args, args.modes, memory=False)
    cuda = args.device.startswith("cuda")
    results = []
    for mode in args.modes:
        peaks = timing[mode]["peak_bytes"] if cuda else _spawn(args, [mode], memory=True)[mode]["peak_bytes"]
        results.append(
            {
                "mode": mode,
                "cpu_s_median": statistics.median(timing[mode]["cpu_s"]),
                "step_s_median": statistics.median(timing[mode]["step_s"]),
                "cpu_s_all": timing[mode]["cpu_s"],
                "step_s_all": timing[mode]["step_s"],
                "peak_bytes": max(peaks),
                "device": args.device,
                "config": {"frames": args.frames, "latent_hw": list(args.latent_hw), "threads": args.threads,
                           "reward_checkpointing": args.reward_checkpointing},
            }
        )
        print(f"{mode}: {results[-1]['cpu_s_median']:.3f} CPU s, {max(peaks) / 2**20:.1f} MiB", file=sys.stderr)
    print(_table(results), end="")
    by_mode = {r["mode"]: float(r["cpu_s_median"]) for r in results}
    if {"dmd", "stream_r1", "stream_r1_reference"} <= set(by_mode):
        ours, ref = (by_mode[m] - by_mode["dmd"] for m in ("stream_r1", "stream_r1_reference"))
        print(f"\nStream-R1 overhead / reference overhead (CPU s above plain DMD): {ours / ref:.2f} "
              f"(reward checkpointing {args.reward_checkpointing})")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
