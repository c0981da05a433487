"""``stream-r1 images build``: the runtime images (ops, train) built here with podman, then smoke-tested."""

from __future__ import annotations

import argparse

NAME = "images"
HELP = "build the runtime images (ops, train) with podman from a hermetic wheelhouse and smoke-test them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="build (or reuse, when its inputs are unchanged) and smoke-test each image")
    b.add_argument("--image", dest="names", action="append", choices=["ops", "train"],
                   help="image to build (repeatable; default: all)")
    b.add_argument("--base-image", help="base image (default: a Debian bookworm bootstrapped here with "
                                        "debootstrap, since no registry is reachable)")
    b.add_argument("--python", default="python3", help="the base's Python 3.11 package (python3.11 on Ubuntu 22.04)")
    b.add_argument("--extra-wheels", help="directory of wheels that replace or add to the lock's, e.g. the CUDA "
                                          "torch and flash-attn wheels of a release build")
    b.add_argument("--cache", default=".stream-r1/images", help="wheelhouse and build contexts")
    b.add_argument("--force", action="store_true", help="rebuild even when the inputs are unchanged")
    b.add_argument("--no-smoke", action="store_true", help="skip the smoke test inside each image")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stream_r1.ops import images, podman
    from stream_r1.ops.pipeline import repo_root

    root = repo_root()
    try:
        podman.require()
        base = args.base_image or podman.ensure_local_base()
    except podman.EngineMissing as e:
        print(f"stream-r1 images: {e}")
        return 2
    failed = 0
    for name in args.names or list(images.IMAGES):
        built = images.build_image(root, name, cache=(root / args.cache).resolve(), base_image=base,
                                   python=args.python, force=args.force,
                                   extra_wheels=Path(args.extra_wheels).resolve() if args.extra_wheels else None)
        verb = "built" if built.built else "up to date"
        print(f"{built.tag}: {verb} in {built.seconds:.0f} s (inputs {built.inputs})")
        if not args.no_smoke:
            problems = images.smoke_test(root, name)
            for p in problems:
                print(f"  smoke test: {p}")
            print(f"  smoke test: {'FAILED' if problems else 'passed'}")
            failed += bool(problems)
    return 1 if failed else 0
