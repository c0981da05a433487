"""The ``stream-r1`` command line: discovers subcommands in ``stream_r1.commands``."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from typing import NoReturn

import stream_r1
import stream_r1.commands as commands_pkg
from stream_r1.utils.cpu_memory import apply_cpu_allocator_defaults
from stream_r1.utils.logging import configure_logging
from stream_r1.utils.paths import describe_os_error

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``stream-r1 train: error: ... (see stream-r1 train --help)``, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{value!r} is not a logging level; use one of {', '.join(LOG_LEVELS)}")
    return level


def _command_modules() -> list:
    mods = []
    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mods.append(importlib.import_module(f"{commands_pkg.__name__}.{info.name}"))
    return mods


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every discovered subcommand."""
    parser = _Parser(
        prog="stream-r1",
        description="Stream-R1: reward-weighted DMD for streaming video, from tiny CPU runs to Kubeflow.",
    )
    parser.add_argument("--version", action="version", version=f"stream-r1 {stream_r1.__version__}")
    parser.add_argument("--log-level", default="INFO", type=_log_level,
                        help=f"logging level ({', '.join(LOG_LEVELS)}); DEBUG also shows tracebacks of user errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and ``python -m stream_r1``."""
    apply_cpu_allocator_defaults()  # before the commands import torch (stream_r1.utils.cpu_memory says why)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    configure_logging(args.log_level)
    prog = f"stream-r1 {args.command}"
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError) as e:
        # User-caused errors (bad value, missing or unwritable path, unreachable host): one line, exit 2.
        # FileNotFoundError and other OSErrors carry a path; an OSError without our own message gets the
        # path, the reason and the fix. --log-level DEBUG re-raises for the traceback.
        if args.log_level == "DEBUG":
            raise
        message = str(e)
        if isinstance(e, OSError) and e.errno is not None and message.startswith(f"[Errno {e.errno}]"):
            message = describe_os_error(e)
        print(f"{prog}: error: {message or type(e).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
