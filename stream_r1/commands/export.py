"""``stream-r1 export``: write a generator checkpoint as a stock diffusers ``WanTransformer3DModel`` directory."""

from __future__ import annotations

import argparse

NAME = "export"
HELP = "export a generator checkpoint (.pt, any supported layout) to a diffusers transformer directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", required=True, help="transformer directory of the student architecture")
    parser.add_argument("--checkpoint", required=True, help="generator .pt/.safetensors (nested or flat layout)")
    parser.add_argument("--output", required=True, help="directory to write (replaced atomically)")
    parser.add_argument("--use-ema", action="store_true", help="export generator_ema (error if absent)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])


def run(args: argparse.Namespace) -> int:
    import torch

    from stream_r1.models.loading import export_diffusers, inspect_generator_checkpoint, load_student

    info = inspect_generator_checkpoint(args.checkpoint)  # fail on a bad file before loading the base
    model = load_student(args.base, args.checkpoint, use_ema=args.use_ema, dtype=getattr(torch, args.dtype))
    out = export_diffusers(model, args.output)
    print(f"exported {info.layout} checkpoint {args.checkpoint} ({'EMA' if args.use_ema else 'generator'}) -> {out}")
    return 0
