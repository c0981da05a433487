"""The ``stream-r1`` command line: discovers subcommands in ``stream_r1.commands``."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import stream_r1
import stream_r1.commands as commands_pkg
from stream_r1.utils.logging import configure_logging


def _command_modules() -> list:
    mods = []
    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mods.append(importlib.import_module(f"{commands_pkg.__name__}.{info.name}"))
    return mods


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every discovered subcommand."""
    parser = argparse.ArgumentParser(
        prog="stream-r1",
        description="Stream-R1: reward-weighted DMD for streaming video, from tiny CPU runs to Kubeflow.",
    )
    parser.add_argument("--version", action="version", version=f"stream-r1 {stream_r1.__version__}")
    parser.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and ``python -m stream_r1``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    configure_logging(args.log_level)
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, TypeError) as e:
        # User-caused errors: one clear line, no traceback (use --log-level DEBUG for one).
        if args.log_level.upper() == "DEBUG":
            raise
        print(f"stream-r1 {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
