"""``stream-r1 ode-init``: block-causal regression of the student on ODE pairs -> ``ode_init.pt``."""

from __future__ import annotations

import argparse

from stream_r1.commands.config import add_config_arguments

NAME = "ode-init"
HELP = "regress the causal student on ODE pairs: `stream-r1 ode-init --config C --pairs DIR --output DIR`"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--pairs", required=True, help="directory written by `stream-r1 ode-pairs`")
    parser.add_argument("--output", required=True, help="output directory (ode_init.pt, checkpoints/, tensorboard/)")
    parser.add_argument("--resume", default=None, metavar="auto|PATH",
                        help="continue from the newest valid checkpoint (auto) or a checkpoint directory")


def run(args: argparse.Namespace) -> int:
    from stream_r1.config import load_config
    from stream_r1.train.ode_entry import run_ode_init

    losses = run_ode_init(load_config(args.config, args.overrides), args.pairs, args.output, args.resume)
    last = f" (last loss {losses[-1]:.6g})" if losses else ""
    print(f"ode_init.pt written to {args.output} after {len(losses)} steps{last}")
    return 0
