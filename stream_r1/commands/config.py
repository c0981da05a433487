"""``stream-r1 config``: print a resolved preset/config, list presets, or validate a file."""

from __future__ import annotations

import argparse

NAME = "config"
HELP = "show or validate a config: `stream-r1 config tiny_cpu --set train.seed=1`"


def add_config_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """The shared ``--config C --set k=v`` pair used by every command that takes a config."""
    parser.add_argument("--config", required=required, help="preset name (e.g. tiny_cpu) or YAML path")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.seed=3 (repeatable)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", nargs="?", help="preset name or YAML path")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--list", action="store_true", help="list the shipped presets")
    parser.add_argument("--hash", action="store_true", help="print only the config hash")


def run(args: argparse.Namespace) -> int:
    from stream_r1.config import config_hash, dump_config, list_presets, load_config

    if args.list or not args.source:
        print("\n".join(list_presets()))
        return 0
    cfg = load_config(args.source, args.overrides)
    print(config_hash(cfg) if args.hash else dump_config(cfg), end="\n" if args.hash else "")
    return 0
