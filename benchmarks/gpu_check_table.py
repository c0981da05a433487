"""The one table of ``benchmarks/gpu_check.sh``, read from what its stages wrote into OUT_DIR."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def _status(out: Path) -> dict[str, int]:
    pairs = (line.split("=", 1) for line in (out / "status.env").read_text().splitlines() if "=" in line)
    return {k: int(v) for k, v in pairs}


def rows(out: Path) -> list[tuple[str, str]]:
    """(measure, value) rows; a stage that failed says so with its exit status and log file."""
    st = _status(out)
    table = [("device", (out / "gpu.txt").read_text().strip() if (out / "gpu.txt").is_file() else "?")]
    if st.get("streaming") == 0:
        data = json.loads((out / "streaming.json").read_text())
        for r in data["results"]:
            table.append((f"streaming FPS, {r['mode']} cache, {r['num_latent_frames']} latent frames "
                          f"({data['meta']['dtype']}, VAE {'on' if data['meta']['with_vae'] else 'off'})",
                          f"{r['pixel_fps']:.2f} frames/s; chunk median {r['median_chunks_2_11_ms']:.1f} ms"))
    else:
        table.append(("streaming FPS", f"FAILED (exit {st.get('streaming')}, see streaming.log)"))
    summary = (out / "pytest.log").read_text().strip().splitlines()[-1:] if (out / "pytest.log").is_file() else []
    table.append(("pytest -m gpu", (summary[0] if summary else "no output") + ("" if st.get("pytest") == 0 else
                                                                             f" (exit {st.get('pytest')})")))
    metrics = out / "train" / "tensorboard" / "metrics.jsonl"
    if st.get("train") == 0 and metrics.is_file():
        steps = [json.loads(x) for x in metrics.read_text().splitlines()]
        times = [s["time/step_seconds"] for s in steps if "time/step_seconds" in s]
        table.append(("smoke training: optimizer steps", str(len(steps))))
        if times:
            table.append(("smoke training: step seconds (first / median of the rest)",
                          f"{times[0]:.1f} / {statistics.median(times[1:] or times):.1f}"))
        peak = max((s.get("memory/cuda_max_allocated_gb", 0.0) for s in steps), default=0.0)
        table.append(("smoke training: peak CUDA allocated", f"{peak:.1f} GB" if peak else "n/a (no CUDA)"))
        losses = [s["loss/generator"] for s in steps if "loss/generator" in s]
        table.append(("smoke training: generator loss finite", str(all(x == x for x in losses)) if losses else "n/a"))
    else:
        table.append(("smoke training", f"FAILED (exit {st.get('train')}, see ckpt.log / train.log)"))
    return table


def main() -> int:
    out = Path(sys.argv[1])
    table = rows(out)
    width = max(len(k) for k, _ in table)
    print("\n| measure | value |\n|---|---|")
    for k, v in table:
        print(f"| {k.ljust(width)} | {v} |")
    return 0 if all(v == 0 for v in _status(out).values()) else 1


if __name__ == "__main__":
    sys.exit(main())
