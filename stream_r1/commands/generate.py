"""``stream-r1 generate``: stream videos from the causal student, one mp4 per prompt + generation.json."""

from __future__ import annotations

import argparse

from stream_r1.commands.config import add_config_arguments

NAME = "generate"
HELP = "stream text-to-video with the student: mp4 per prompt, per-chunk latency and FPS in generation.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--checkpoint", required=True,
        help="generator .pt (Self-Forcing/Reward Forcing/Stream-R1 layouts) or a transformer directory",
    )
    parser.add_argument("--prompts", required=True, help="text file, one prompt per line")
    parser.add_argument(
        "--num-frames", type=int, default=None,
        help="latent frames per video, a multiple of model.frames_per_block (21 -> 81 pixel frames); "
        "default eval.num_frames",
    )
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--use-ema", action="store_true", help="use generator_ema (error if the file has none)")
    parser.add_argument("--seed", type=int, default=None, help="base seed, video i uses seed+i (default eval.seed)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None,
        help="torch.compile the student for streaming (default: on for CUDA, off on CPU)",
    )


def run(args: argparse.Namespace) -> int:
    from stream_r1.config import load_config
    from stream_r1.sample.generate import generate

    cfg = load_config(args.config, args.overrides)
    num_frames = cfg.eval.num_frames if args.num_frames is None else args.num_frames
    report = generate(
        cfg, args.checkpoint, args.prompts, num_frames, args.output, args.use_ema, args.seed,
        device=args.device, ema_fallback=False, compile=args.compile,
    )
    for r in report.results:
        print(f"{r.path}  {r.num_pixel_frames} frames  {r.fps:.1f} FPS  first chunk {r.chunk_latency_ms[0]:.0f} ms")
    print(f"{len(report.results)} videos, {report.fps:.2f} FPS overall -> {report.output_dir}/generation.json")
    return 0
