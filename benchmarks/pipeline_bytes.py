"""Bytes two consecutive ``run-local`` runs write: to the bucket, to the KFP pipeline root, to the shared volume.

Run from a checkout's root (``PYTHONPATH=. python benchmarks/pipeline_bytes.py WORKDIR``); the same script on
an older checkout gives the "before" column of docs/pipeline.md. The bucket is read back by restarting the
run's SeaweedFS on its own data directory after each run. Local sizes count each file once per path (hard
links included), so the shared-volume column is an upper bound.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _size(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink()) if root.exists() else 0


def main() -> None:
    from stream_r1.ops.pipeline import run_local
    from stream_r1.ops.seaweed import SeaweedServer
    from stream_r1.ops.store import ArtifactStore

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--output", type=Path, help="write the rows as JSON here (stdout carries the run logs)")
    args = parser.parse_args()
    rows, prev = [], {"bucket": 0, "pipeline_root": 0, "shared": 0}
    for i in range(args.runs):
        summary = run_local(workdir=args.workdir, params={"overrides": ["train.num_optimizer_steps=2"]})
        with SeaweedServer(args.workdir / "seaweed") as creds:
            objs = list(ArtifactStore(creds, "stream-r1").client.list_objects("stream-r1", recursive=True))
        now = {"bucket": sum(int(o.size or 0) for o in objs), "pipeline_root": _size(args.workdir / "pipeline_root"),
               "shared": _size(args.workdir / "shared")}
        rows.append({"run": i + 1, "state": summary.state, "objects_total": len(objs),
                     **{f"{k}_bytes_added": now[k] - prev[k] for k in now}})
        prev = now
    text = json.dumps(rows, indent=1)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
