"""``stream-r1 ode-pairs``: teacher ODE trajectories for the initialisation stage (resumable shards)."""

from __future__ import annotations

import argparse

from stream_r1.commands.config import add_config_arguments

NAME = "ode-pairs"
HELP = "generate teacher ODE trajectories (48-step Euler, shift 8, CFG 6): `stream-r1 ode-pairs --config C --output DIR`"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--output", required=True, help="pairs directory (shards + index.json; reruns resume)")
    parser.add_argument("--prompts", default=None, help="prompt file, one per line (default: data.prompts)")
    parser.add_argument("--teacher", choices=("base", "teacher"), default="base",
                        help="network that draws the trajectories: checkpoints.base (1.3B, reference) or .teacher")


def run(args: argparse.Namespace) -> int:
    from stream_r1.config import load_config
    from stream_r1.train.ode_entry import run_ode_pairs

    index = run_ode_pairs(load_config(args.config, args.overrides), args.output, args.prompts, args.teacher)
    print(f"ODE pairs: {index}")
    return 0
