"""``stream-r1 train``: distil the streaming student (world size 1, or under torchrun with FSDP2)."""

from __future__ import annotations

import argparse

from stream_r1.commands.config import add_config_arguments

NAME = "train"
HELP = "train the streaming student: `stream-r1 train --config tiny_cpu --output runs/x [--resume auto]`"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stream_r1.train.run_identity import RESUME_RULE  # torch-free

    parser.epilog = f"Resuming: {RESUME_RULE}"
    add_config_arguments(parser)
    parser.add_argument("--output", required=True, help="run directory (config.yaml, checkpoints/, tensorboard/)")
    parser.add_argument("--resume", default=None, metavar="auto|PATH",
                        help="continue from the newest valid checkpoint (auto) or a checkpoint directory")
    parser.add_argument("--test-sigkill-after-checkpoint", type=int, default=None, metavar="STEP",
                        help="testing only: SIGKILL this process right after the checkpoint of STEP is written")
    parser.add_argument("--test-sigkill-during-checkpoint", type=int, default=None, metavar="STEP",
                        help="testing only: SIGKILL this process in the middle of writing STEP's checkpoint")


def run(args: argparse.Namespace) -> int:
    from stream_r1.config import load_config
    from stream_r1.method.metric_keys import LOSS_CRITIC
    from stream_r1.train.entry import run_training

    cfg = load_config(args.config, args.overrides)
    history = run_training(
        cfg,
        args.output,
        args.resume,
        sigkill_after_checkpoint=args.test_sigkill_after_checkpoint,
        sigkill_during_checkpoint=args.test_sigkill_during_checkpoint,
    )
    if history:
        last = history[-1]
        print(f"trained to optimizer step {int(last['step'])}: critic loss {last.get(LOSS_CRITIC, float('nan')):.6g}")
    return 0
