"""Per-chunk latency of streaming generation as the video grows: rolling window vs full KV cache.

Usage (tiny config, CPU; the numbers in docs/benchmarks.md come from this command):

    .venv/bin/python benchmarks/streaming_latency.py --frames 21 120 480 --output bench.json

Full size on a GPU (Wan2.1-1.3B geometry, 832x480 -> latents 60x104, random weights, bf16, VAE decode
included; the paper reports 23.1 FPS on one H100 with the local window):

    .venv/bin/python benchmarks/streaming_latency.py --device cuda --full-size --frames 21 120 480

Check (a streaming student must not slow down as the video grows): with the window, median(last 10 chunks) / median(chunks 2-11) must be <= 1.10 at the
largest frame count; the script prints the ratio and exits 1 when it is violated. Each case runs
``--repeats`` times and the per-chunk minimum is kept (load on a shared machine only ever slows a chunk). Chunk latency is the
transformer part (4 denoising steps + context pass) plus, with ``--with-vae``, the streaming VAE decode.
On CPU it is the thread's CPU time per chunk (``--clock cpu``, one torch thread): on a shared machine
wall time mostly measures the neighbours; on a GPU it is synchronised wall time.

``--compile`` compiles the student with inductor (``stream_r1.models.compile``) after building it; the
warm-up then streams until the window is full, so every geometry is compiled before timing starts.

Before/after, side by side (the numbers of docs/benchmarks.md "Streaming speed-up"):

    .venv/bin/python benchmarks/streaming_latency.py --baseline 4c7cdae --compile --frames 60 \
        --latent-hw 30 52 --repeats 3

checks out ``--baseline`` (a git ref) into a temporary worktree and runs that commit's own copy of this
script and the current one as alternating subprocesses (window mode only, same seeds, hence the same
weights, prompt and noise), ``--repeats`` rounds, keeping the per-chunk minimum of each. It prints the
median chunk time once the window is full (chunk index >= 3) for each and the speed-up over the baseline.
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
import time
from dataclasses import dataclass, field

from stream_r1.utils.cpu_memory import CPU_ALLOCATOR_DEFAULTS, apply_cpu_allocator_defaults

# Run as the stream-r1 command runs (its CPU-allocator defaults, set before torch allocates); a --baseline
# commit's copy runs with the environment the caller gave, as that commit's command did.
CALLER_SET = {key: os.environ[key] for key in CPU_ALLOCATOR_DEFAULTS if key in os.environ}
apply_cpu_allocator_defaults()

import torch  # noqa: E402

from stream_r1.config import load_config  # noqa: E402
from stream_r1.method.build import student_denoiser  # noqa: E402
from stream_r1.models.causal_wan import CausalWanTransformer  # noqa: E402
from stream_r1.models.compile import compile_student  # noqa: E402
from stream_r1.models.loading import cast_keeping_fp32_modules  # noqa: E402
from stream_r1.models.tiny import TINY_STUDENT, TINY_VAE  # noqa: E402
from stream_r1.models.vae import WanVAE  # noqa: E402
from stream_r1.rollout.self_forcing import student_timesteps  # noqa: E402
from stream_r1.rollout.streaming import stream_chunks  # noqa: E402

# Wan2.1-T2V-1.3B (docs/method.md §4.1).
FULL_1_3B = {
    "patch_size": (1, 2, 2), "num_attention_heads": 12, "attention_head_dim": 128, "in_channels": 16,
    "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 8960, "num_layers": 30,
    "cross_attn_norm": True, "rope_max_seq_len": 1024,
}
RATIO_LIMIT = 1.10
FULL_CACHE_MAX_FRAMES_FULL_SIZE = 21  # 480 frames of full cache at 1.3B would need ~140 GB of K/V


@dataclass
class CaseResult:
    """One (cache mode, frame count) run."""

    mode: str
    num_frames: int
    chunk_ms: list[float] = field(default_factory=list)
    cache_bytes: int = 0
    seconds: float = 0.0

    @property
    def pixel_fps(self) -> float:
        return (1 + 4 * (self.num_frames - 1)) / self.seconds if self.seconds else 0.0

    def ratio(self) -> float | None:
        """median(last 10 chunks) / median(chunks 2-11), or None with fewer than 20 chunks."""
        if len(self.chunk_ms) < 20:
            return None
        return statistics.median(self.chunk_ms[-10:]) / statistics.median(self.chunk_ms[1:11])

    def summary(self) -> dict[str, object]:
        c = self.chunk_ms
        return {
            "mode": self.mode, "num_latent_frames": self.num_frames, "num_chunks": len(c),
            "first_chunk_ms": round(c[0], 2), "median_chunks_2_11_ms": round(statistics.median(c[1:11]), 2),
            "median_last10_ms": round(statistics.median(c[-10:]), 2), "ratio_last10_over_2_11": self.ratio(),
            "cache_mb": round(self.cache_bytes / 2**20, 3), "cache_bytes": self.cache_bytes, "pixel_fps": round(self.pixel_fps, 2),
            "chunk_ms": [round(x, 2) for x in c],
        }


def build_student(full_size: bool, device: torch.device, dtype: torch.dtype, seed: int) -> CausalWanTransformer:
    """Random-weight causal student; the tiny one gets a 1024-position RoPE table so 480 frames fit."""
    cfg = FULL_1_3B if full_size else {**TINY_STUDENT, "rope_max_seq_len": 1024}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.device(device):
            model = CausalWanTransformer(**cfg)
    cast_keeping_fp32_modules(model, dtype)
    return model.eval()


def build_vae(full_size: bool, device: torch.device, dtype: torch.dtype, seed: int) -> WanVAE:
    """Random-weight Wan VAE (Wan2.1 geometry at full size, the tiny one otherwise)."""
    from diffusers import AutoencoderKLWan

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoencoderKLWan() if full_size else AutoencoderKLWan(**TINY_VAE)
    return WanVAE(model.to(device, dtype))


def run_case(
    model: CausalWanTransformer, vae: WanVAE | None, mode: str, num_frames: int, args: argparse.Namespace
) -> CaseResult:
    """Stream ``num_frames`` latent frames once and time every chunk."""
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    windowed = mode == "window"
    cfg = args.cfg if windowed else dataclasses.replace(
        args.cfg, model=dataclasses.replace(args.cfg.model, local_attn_frames=-1, sink_frames=0))
    den = student_denoiser(cfg, model)
    h, w = args.latent_hw
    text = torch.randn(1, args.text_len, model.config.text_dim, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator(device=device).manual_seed(args.seed)
    res = CaseResult(mode, num_frames)
    res.cache_bytes = den.new_cache(1, num_frames, (h, w), rolling=windowed, dtype=dtype, device=device).nbytes()
    stream = vae.new_stream() if vae is not None else None
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    start = time.perf_counter()
    cpu_mark = time.thread_time()
    with torch.no_grad():
        for chunk in stream_chunks(
            den, text.to(device), num_frames=num_frames, latent_shape=(16, h, w), timesteps=args.steps,
            rng=gen, rolling=windowed, dtype=dtype, device=device,
        ):
            wall_ms = chunk.latency_ms
            if stream is not None:
                t0 = time.perf_counter()
                stream.push(chunk.x0)
                sync()
                wall_ms += 1000.0 * (time.perf_counter() - t0)
            now = time.thread_time()
            # CPU time of this thread between yields = the chunk's own compute (+ its decode), immune to
            # other processes on a shared CPU (single-threaded torch); wall time on GPUs.
            res.chunk_ms.append(1000.0 * (now - cpu_mark) if args.clock == "cpu" else wall_ms)
            cpu_mark = time.thread_time()
    sync()
    res.seconds = time.perf_counter() - start
    return res


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, nargs="+", default=[21, 120, 480], help="latent frame counts")
    p.add_argument("--modes", nargs="+", default=["window", "full"], choices=["window", "full"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--full-size", action="store_true", help="Wan2.1-1.3B at 832x480 (60x104 latents), bf16")
    p.add_argument("--with-vae", action="store_true", help="also decode every chunk (default on with --full-size)")
    p.add_argument("--dtype", default=None, help="float32 (tiny default) or bfloat16 (full-size default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clock", choices=["cpu", "wall"], default=None,
                   help="chunk timing: thread CPU time (default on CPU, needs --threads 1) or wall time (GPU default)")
    p.add_argument("--repeats", type=int, default=3, help="runs per case; the per-chunk minimum is reported")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1: stable timings on a shared CPU)")
    p.add_argument("--latent-hw", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="latent size (default: the preset's, 4x4 tiny / 60x104 full size)")
    p.add_argument("--output", default=None, help="write all results as JSON here")
    p.add_argument("--compile", action="store_true", help="torch.compile the student (inductor) before timing")
    p.add_argument("--baseline", default=None, metavar="GIT_REF",
                   help="compare with this commit's code, side by side (see the module docstring)")
    args = p.parse_args(argv)
    cfg = load_config("wan2.1_t2v_1.3b_stream_r1" if args.full_size else "tiny_cpu")
    args.cfg = cfg
    args.dtype = args.dtype or ("bfloat16" if args.full_size else "float32")
    args.latent_hw = tuple(args.latent_hw or (cfg.rollout.latent_height, cfg.rollout.latent_width))
    args.text_len = cfg.model.text_len_tokens
    args.steps = student_timesteps(cfg.rollout)
    args.with_vae = args.with_vae or args.full_size
    args.clock = args.clock or ("cpu" if args.device == "cpu" else "wall")
    if args.clock == "cpu" and (args.device != "cpu" or args.threads != 1):
        p.error("--clock cpu measures one CPU thread: use it with --device cpu --threads 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if args.baseline:
        return compare_with_baseline(args)
    model = build_student(args.full_size, device, dtype, args.seed)
    if args.compile:
        compile_student(model)
    vae = build_vae(args.full_size, device, dtype, args.seed + 1) if args.with_vae else None
    m = args.cfg.model
    # Warm-up (allocator, kernels; compiled: every geometry of a filling window, then one steady chunk).
    warm = (m.local_attn_frames + m.frames_per_block) if args.compile else 2 * m.frames_per_block
    run_case(model, vae, "window", warm - warm % m.frames_per_block, args)
    results = []
    for frames in args.frames:
        for mode in args.modes:
            if mode == "full" and args.full_size and frames > FULL_CACHE_MAX_FRAMES_FULL_SIZE:
                print(f"skip full cache at {frames} frames (full size: K/V would not fit)")
                continue
            runs = [run_case(model, vae, mode, frames, args) for _ in range(args.repeats)]
            # Per chunk index the fastest of the repeats: a shared CPU adds load spikes, never speed-ups.
            r = CaseResult(mode, frames, [min(ms) for ms in zip(*(x.chunk_ms for x in runs), strict=True)],
                           runs[0].cache_bytes, min(x.seconds for x in runs))
            s = r.summary()
            results.append(s)
            print(
                f"{mode:6s} F={frames:4d} chunks={s['num_chunks']:4d} first={s['first_chunk_ms']:8.2f} ms "
                f"med(2-11)={s['median_chunks_2_11_ms']:8.2f} ms med(last10)={s['median_last10_ms']:8.2f} ms "
                f"ratio={s['ratio_last10_over_2_11'] or float('nan'):.3f} cache={s['cache_mb']:9.3f} MB "
                f"fps={s['pixel_fps']:.2f}",
                flush=True,
            )
    window = [s for s in results if s["mode"] == "window"]
    verdict = 0
    if window and window[-1]["ratio_last10_over_2_11"] is not None:
        ratio = window[-1]["ratio_last10_over_2_11"]
        ok = ratio <= RATIO_LIMIT
        verdict = 0 if ok else 1
        print(f"window ratio at {window[-1]['num_latent_frames']} frames: {ratio:.3f} "
              f"({'OK' if ok else 'FAIL'}, limit {RATIO_LIMIT})")
    if args.output:
        meta = {"device": str(device), "repeats": args.repeats, "clock": args.clock, "dtype": args.dtype, "full_size": args.full_size, "with_vae": args.with_vae,
                "latent_hw": list(args.latent_hw), "torch": torch.__version__, "threads": torch.get_num_threads()}
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)
    return verdict


WINDOW_FULL_CHUNK = 3  # window 9 / chunks of 3: from chunk index 3 on every chunk has the same geometry


def _run_tree(tree: str, argv: list[str], baseline: bool = False) -> list[float]:
    """Run ``tree``'s copy of this script once (``--repeats 1``, window mode) and return its chunk times.

    The baseline's copy gets the caller's environment without this command's allocator defaults.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        script = os.path.join(tree, "benchmarks", "streaming_latency.py")
        env = {**os.environ, "PYTHONPATH": tree}
        if baseline:
            env = {k: v for k, v in env.items() if k not in CPU_ALLOCATOR_DEFAULTS} | CALLER_SET
        subprocess.run([sys.executable, script, *argv, "--repeats", "1", "--modes", "window", "--output", out],
                       check=True, env=env, cwd=tree, stdout=subprocess.DEVNULL)
        with open(out, encoding="utf-8") as f:
            return json.load(f)["results"][0]["chunk_ms"]


def compare_with_baseline(args: argparse.Namespace) -> int:
    """Baseline commit vs current code (eager, and compiled with ``--compile``), alternating subprocesses."""
    if len(args.frames) != 1:
        raise SystemExit("--baseline compares one stream length: pass a single --frames value")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    common = ["--frames", str(args.frames[0]), "--latent-hw", *map(str, args.latent_hw), "--device", args.device,
              "--dtype", args.dtype, "--seed", str(args.seed), "--clock", args.clock, "--threads", str(args.threads)]
    common += ["--full-size"] * args.full_size + ["--with-vae"] * args.with_vae
    base = os.path.join(tempfile.mkdtemp(prefix="streaming-baseline-"), "tree")
    subprocess.run(["git", "-C", root, "worktree", "add", "--detach", "--quiet", base, args.baseline], check=True)
    contenders = {"baseline": (base, common), "current": (root, common)}
    if args.compile:
        contenders["current --compile"] = (root, [*common, "--compile"])
    runs: dict[str, list[list[float]]] = {name: [] for name in contenders}
    try:
        for _ in range(args.repeats):
            for name, (tree, cli) in contenders.items():
                runs[name].append(_run_tree(tree, cli, baseline=name == "baseline"))
    finally:
        subprocess.run(["git", "-C", root, "worktree", "remove", "--force", base], check=False)
    summary = {}
    for name, chunks in runs.items():
        best = [min(ms) for ms in zip(*chunks, strict=True)]
        summary[name] = {"median_ms": statistics.median(best[WINDOW_FULL_CHUNK:]), "chunk_ms": best}
    ref = summary["baseline"]["median_ms"]
    print(f"baseline {args.baseline}: {args.frames[0]} latent frames, latent {args.latent_hw[0]}x{args.latent_hw[1]}, "
          f"{args.repeats} rounds, median chunk time with the window full (chunk >= {WINDOW_FULL_CHUNK})")
    for name, s in summary.items():
        s["speedup_vs_baseline"] = ref / s["median_ms"]
        print(f"{name:18s} {s['median_ms']:8.2f} ms/chunk   x{s['speedup_vs_baseline']:.3f}")
    if args.output:
        meta = {"baseline": args.baseline, "frames": args.frames[0], "latent_hw": list(args.latent_hw),
                "repeats": args.repeats, "torch": torch.__version__, "clock": args.clock}
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "results": summary}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
