"""The VAE's image-phase step through ``vae.encode`` / ``decode_unclamped`` vs :func:`autoencode_frames`, side by side.

Usage (docs/benchmarks.md, "Shapes world", "Where a build's time goes"):

    .venv/bin/python benchmarks/vae_image_path.py --rounds 7

One copy of the shapes world's VAE as the build trains it (``stream_r1.shapes.vae.VAE_CONFIG``, first-frame
convolutions, CPU-fast channel norm) runs one image-phase training step (8 single 32x32 frames: encode, unclamped
decode, the build's loss, backward) both ways in alternation in one process (one torch thread, thread CPU time,
median over ``--rounds`` rounds of ``--calls`` calls). The two paths compute the same values to the bit
(tests/unit/shapes/test_vae_recipe.py); the difference is diffusers' causal-cache bookkeeping, which a single
frame never needs.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
from diffusers import AutoencoderKLWan
from thread_timing import thread_ms

from stream_r1.models.vae_conv import use_first_frame_convs
from stream_r1.models.vae_norm import use_channel_rms_norm
from stream_r1.shapes.vae import VAE_CONFIG, autoencode_frames, clamp_aware_error, decode_unclamped


def _as_built_vae() -> AutoencoderKLWan:
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**VAE_CONFIG)
    use_channel_rms_norm(vae)
    use_first_frame_convs(vae)
    return vae


def _stock_path(vae: AutoencoderKLWan, x: torch.Tensor) -> None:
    mu = vae.encode(x).latent_dist.mode()
    vae.zero_grad(set_to_none=True)
    clamp_aware_error(decode_unclamped(vae, mu), x).backward()


def _direct_path(vae: AutoencoderKLWan, x: torch.Tensor) -> None:
    raw, _ = autoencode_frames(vae, x)
    vae.zero_grad(set_to_none=True)
    clamp_aware_error(raw, x).backward()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=10)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    frames = torch.rand(8, 3, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    vae = _as_built_vae()
    paths = {"encode + decode_unclamped": _stock_path, "autoencode_frames": _direct_path}
    times: dict[str, list[float]] = {name: [] for name in paths}
    for fn in paths.values():
        fn(vae, frames)  # warm-up
    for _ in range(args.rounds):
        for name, fn in paths.items():
            times[name].append(thread_ms(lambda f=fn: f(vae, frames), args.calls))
    print(f"torch {torch.__version__}, 1 thread, median of {args.rounds} rounds x {args.calls} calls (thread CPU ms)")
    print("| image-phase step (8 frames) | ms | vs encode + decode_unclamped |")
    print("|---|---:|---:|")
    base = statistics.median(times["encode + decode_unclamped"])
    for name in paths:
        ms = statistics.median(times[name])
        print(f"| {name} | {ms:.1f} | x{base / ms:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
