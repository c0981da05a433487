"""CLI subcommands, one module each; ``stream_r1.cli`` discovers them.

Each module defines ``NAME`` (the subcommand, e.g. ``"make-tiny-checkpoints"``), ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Heavy imports (torch, diffusers, kfp) go inside
``run`` so ``stream-r1 --help`` stays fast.
"""
