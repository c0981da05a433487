"""Stock ``WanCausalConv3d`` vs :class:`~stream_r1.models.vae_conv.FirstFrameCausalConv3d`, side by side.

Usage (docs/benchmarks.md, "Shapes world", "First-frame convolutions"):

    .venv/bin/python benchmarks/vae_first_frame.py --rounds 5

Two copies of the shapes world's VAE (``stream_r1.shapes.vae.VAE_CONFIG``, same seed and weights, both with the
CPU-fast channel norm), one with stock causal convolutions and one with first-frame convolutions, alternate
in one process (one torch thread, thread CPU time, median over ``--rounds`` rounds of ``--calls`` calls) on:

* ``image step``: one image-phase training step (encode + decode + backward) of 8 single 32x32 frames;
* ``clip step``: one clip-phase training step of 4 clips of 9 frames at 32x32;
* ``decode``: a no-grad decode of 3 latent frames at 4x4 (a rollout's 9 frames at 32x32).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable

import torch
from diffusers import AutoencoderKLWan
from thread_timing import thread_ms

from stream_r1.models.vae_conv import use_first_frame_convs
from stream_r1.models.vae_norm import use_channel_rms_norm
from stream_r1.shapes.vae import VAE_CONFIG


def _vae(first_frame: bool) -> AutoencoderKLWan:
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**VAE_CONFIG)
    use_channel_rms_norm(vae)
    if first_frame:
        use_first_frame_convs(vae)
    return vae


def _train_step(vae: AutoencoderKLWan, x: torch.Tensor) -> None:
    out = vae.decode(vae.encode(x).latent_dist.mode()).sample
    vae.zero_grad(set_to_none=True)
    (out - x).square().mean().backward()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(1)
    frames = torch.rand(8, 3, 1, 32, 32, generator=gen) * 2 - 1
    clips = torch.rand(4, 3, 9, 32, 32, generator=gen) * 2 - 1
    latents = torch.randn(1, 16, 3, 4, 4, generator=gen)
    stock, fast = _vae(False), _vae(True)
    work: dict[str, Callable[[AutoencoderKLWan], object]] = {
        "image step (8 frames)": lambda v: _train_step(v, frames),
        "clip step (4 x 9 frames)": lambda v: _train_step(v, clips),
        "decode (3 latent frames)": lambda v: torch.no_grad()(v.decode)(latents),
    }
    times: dict[tuple[str, str], list[float]] = {}
    for name, fn in work.items():
        fn(stock), fn(fast)  # warm-up
        for _ in range(args.rounds):
            for label, vae in (("stock", stock), ("first-frame", fast)):
                times.setdefault((name, label), []).append(thread_ms(lambda v=vae, f=fn: f(v), args.calls))
    print(f"torch {torch.__version__}, 1 thread, median of {args.rounds} rounds x {args.calls} calls (thread CPU ms)")
    print("| work | stock ms | first-frame ms | speed-up |")
    print("|---|---:|---:|---:|")
    for name in work:
        a, b = statistics.median(times[(name, "stock")]), statistics.median(times[(name, "first-frame")])
        print(f"| {name} | {a:.1f} | {b:.1f} | x{a / b:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
