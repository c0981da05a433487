"""``stream-r1 shapes build DIR [--size ci]``: the shapes world's trained checkpoint set (docs/shapes.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "shapes"
HELP = "the shapes world: `stream-r1 shapes build DIR [--size ci]` trains its VAE, teacher, VideoReward and ODE init"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="shapes_command", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="build (or verify) the world's checkpoints in DIR")
    build.add_argument("dir", help="output directory (the shapes_cpu preset's checkpoints.root)")
    build.add_argument("--size", default="default", help="default (the experiment's world) or ci (smaller budgets, a few minutes on 2 cores)")
    build.add_argument("--seed", type=int, default=0, help="seed of every stage")
    build.add_argument("--force", action="store_true", help="rebuild even when the directory verifies")


def run(args: argparse.Namespace) -> int:
    from stream_r1.shapes.sizes import get_size

    get_size(args.size)  # bad size: one clear line before anything heavy is imported
    from stream_r1.shapes.build import METRICS_FILE, build_world

    root = build_world(Path(args.dir), args.size, seed=args.seed, force=args.force)
    metrics = json.loads((root / METRICS_FILE).read_text(encoding="utf-8"))
    t = metrics["teacher_held_out"]
    print(
        f"shapes world ({args.size}) in {root}: VAE PSNR {metrics['vae']['psnr']:.1f} dB; teacher held-out "
        f"colour {t['color']:.2f} shape {t['shape']:.2f} direction {t['direction']:.2f} Total {t['total']:.3f}; "
        + " ".join(f"{k} {v:.2f}" for k, v in metrics["videoreward"].items())
    )
    return 0
