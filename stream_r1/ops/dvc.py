"""DVC glue: ``params.yaml`` from a preset, loss curves for ``dvc plots``, the S3 remote's local credentials.

DVC owns versioned *inputs and parameters* (docs/pipeline.md): ``dvc.yaml`` mirrors the KFP DAG by
calling the same ``python -m stream_r1 ...`` commands with ``--config params.yaml``, so
``dvc exp run -S train.num_optimizer_steps=6`` is a sweep. Credentials never enter ``.dvc/config``:
``configure_remote`` writes them to the git-ignored ``.dvc/config.local``.

Run as ``python -m stream_r1.ops.dvc params|loss-curves ...`` (the commands ``dvc.yaml`` uses).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from stream_r1.method.metric_keys import LOSS_CURVES
from stream_r1.ops.seaweed import S3Credentials
from stream_r1.utils.io import atomic_write_json, atomic_write_text

REMOTE = "store"
LOSS_KEYS = LOSS_CURVES


def write_params(preset: str, path: str | Path, overrides: list[str] | None = None) -> Path:
    """Write the resolved ``preset`` (+ ``overrides``) as ``params.yaml`` (loadable with ``--config params.yaml``)."""
    from stream_r1.config import dump_config, load_config

    return atomic_write_text(path, dump_config(load_config(preset, overrides or [])))


def loss_curves(jsonl: str | Path, out: str | Path, keys: tuple[str, ...] = LOSS_KEYS) -> Path:
    """Turn the trainer's JSONL metrics into a DVC plot file: ``[{"step": s, "<key>": v, ...}, ...]``.

    Rows without any of ``keys`` are dropped; key slashes become underscores (DVC field names).

    Raises:
        FileNotFoundError: ``jsonl`` is missing.
    """
    jsonl = Path(jsonl)
    if not jsonl.is_file():
        raise FileNotFoundError(f"{jsonl} not found; `stream-r1 train` writes it under <output>/tensorboard/")
    rows = []
    for line in jsonl.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        vals = {k.replace("/", "_"): float(rec[k]) for k in keys if k in rec}
        if vals and "step" in rec:
            rows.append({"step": int(rec["step"]), **vals})
    return atomic_write_json(out, rows)


def configure_remote(repo: str | Path, creds: S3Credentials, *, url: str | None = None) -> None:
    """Point the ``store`` remote at ``creds``' endpoint with keys in ``.dvc/config.local`` (never committed).

    Args:
        repo: The DVC repository root.
        creds: S3 endpoint and keys.
        url: Override the remote URL (default: keep ``.dvc/config``'s ``s3://...``).
    """
    dvc = str(Path(sys.executable).parent / "dvc")
    # "--" ends dvc's options: a key or secret that starts with "-" (1 in 64 random url-safe keys) is a value.
    cmds = [["remote", "modify", "--local", "--", REMOTE, "endpointurl", creds.url],
            ["remote", "modify", "--local", "--", REMOTE, "access_key_id", creds.access_key],
            ["remote", "modify", "--local", "--", REMOTE, "secret_access_key", creds.secret_key]]
    if url:
        cmds.append(["remote", "modify", "--local", "--", REMOTE, "url", url])
    for c in cmds:
        subprocess.run([dvc, *c], cwd=repo, check=True, capture_output=True, text=True)


def main(argv: list[str] | None = None) -> int:
    """``params PRESET OUT [--set k=v]`` | ``loss-curves JSONL OUT``."""
    parser = argparse.ArgumentParser(prog="python -m stream_r1.ops.dvc")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("params", help="write params.yaml from a preset")
    p.add_argument("preset")
    p.add_argument("out")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    c = sub.add_parser("loss-curves", help="trainer metrics.jsonl -> DVC plot JSON")
    c.add_argument("jsonl")
    c.add_argument("out")
    args = parser.parse_args(argv)
    if args.cmd == "params":
        write_params(args.preset, args.out, args.overrides)
    else:
        loss_curves(args.jsonl, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
