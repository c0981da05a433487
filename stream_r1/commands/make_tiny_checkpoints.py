"""``stream-r1 make-tiny-checkpoints DIR``: tiny random models in the real on-disk formats (no hub).

Layout (docs/design.md "Tiny checkpoints"): ``base/ base_original/ teacher/ ode_init.pt vae/ text_encoder/
tokenizer/ VideoReward/ MANIFEST.json``. Idempotent: a directory whose MANIFEST verifies is left as it is;
one with a missing or damaged file is rebuilt.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

NAME = "make-tiny-checkpoints"
HELP = "write tiny random teacher/student/VAE/umT5/VideoReward checkpoints for offline runs"

MANIFEST = "MANIFEST.json"
MODEL_PARTS = ("base", "base_original", "teacher", "ode_init.pt", "vae", "text_encoder", "tokenizer")
REWARD_PART = "VideoReward"
STAGING_PREFIX = ".staging-"


def _manifest_ok(root: Path, parts: tuple[str, ...]) -> bool:
    from stream_r1.utils.io import sha256_file

    path = root / MANIFEST
    if not path.is_file():
        return False
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    files = manifest.get("files", {})
    if any(not any(f == p or f.startswith(p + "/") for f in files) for p in parts):
        return False
    return all((root / rel).is_file() and sha256_file(root / rel) == sha for rel, sha in files.items())


def write_tiny_checkpoints(root: str | Path, *, seed: int = 0, with_reward: bool = True, force: bool = False) -> Path:
    """Write (or verify) the whole tiny checkpoint set under ``root`` and return ``root``.

    Every file is checked against ``MANIFEST.json``. When one is missing, truncated or altered (or the
    manifest is), the whole set is rebuilt in a staging directory inside ``root`` and swapped in part
    by part; the manifest is written last, so an interrupted rebuild is repaired by the next call. The
    set is rebuilt as a whole because its parts belong together (``base_original`` holds ``base``'s
    weights, ``ode_init.pt`` is its student).

    Args:
        root: Target directory (created).
        seed: Base seed of every random model.
        with_reward: Also write ``VideoReward/`` via ``stream_r1.reward.tiny.write_tiny_videoreward``.
        force: Rebuild even when the existing MANIFEST verifies.
    """
    from stream_r1.utils.io import atomic_publish_dir, atomic_write_json, sha256_file

    root = Path(root)
    parts = MODEL_PARTS + ((REWARD_PART,) if with_reward else ())
    if not force and _manifest_ok(root, parts):
        return root
    from stream_r1.models.tiny import write_tiny_models  # heavy (diffusers, transformers): only when writing
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).unlink(missing_ok=True)  # not a verified set until the new manifest is written
    for old in root.glob(f"{STAGING_PREFIX}*"):  # left by an interrupted rebuild
        shutil.rmtree(old, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root))
    try:
        write_tiny_models(staging, seed=seed)
        if with_reward:
            from stream_r1.reward.tiny import write_tiny_videoreward

            write_tiny_videoreward(staging / REWARD_PART)
        for entry in sorted(staging.iterdir()):
            target = root / entry.name
            if entry.is_dir():
                atomic_publish_dir(entry, target)
            else:
                if target.is_dir():
                    shutil.rmtree(target)
                os.replace(entry, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    files = {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }
    atomic_write_json(root / MANIFEST, {"seed": seed, "parts": list(parts), "files": files})
    return root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="output directory (e.g. .cache/tiny-checkpoints, the tiny_cpu preset's root)")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the random weights")
    parser.add_argument("--no-reward", action="store_true", help="skip the tiny VideoReward model")
    parser.add_argument("--force", action="store_true", help="rebuild even if every file verifies against MANIFEST.json")


def run(args: argparse.Namespace) -> int:
    from stream_r1.utils.paths import check_output_dir

    check_output_dir(args.dir, "DIR")
    root = write_tiny_checkpoints(args.dir, seed=args.seed, with_reward=not args.no_reward, force=args.force)
    manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    print(f"tiny checkpoints in {root}: {len(manifest['files'])} files ({', '.join(manifest['parts'])})")
    return 0
