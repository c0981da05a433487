"""``stream-r1 compare RUN_A RUN_B``: side-by-side table (and plot) of two evaluations' metrics.json."""

from __future__ import annotations

import argparse

NAME = "compare"
HELP = "compare two evaluations (metrics.json): difference per metric and whether B is better"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_a", help="baseline: evaluation output directory or its metrics.json")
    parser.add_argument("run_b", help="candidate: evaluation output directory or its metrics.json")
    parser.add_argument("--output", default=None, help="write comparison.md/.json/.png into this directory")


def run(args: argparse.Namespace) -> int:
    from stream_r1.eval.compare import compare_runs

    md, _ = compare_runs(args.run_a, args.run_b, args.output)
    print(md, end="")
    if args.output:
        print(f"wrote comparison.md, comparison.json and comparison.png to {args.output}")
    return 0
