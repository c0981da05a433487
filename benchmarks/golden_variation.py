"""How much the tiny golden loss curve moves with the CPU's kernels and thread count.

The golden curve (``tests/assets/losses/tiny_cpu.json``) is fp32 training: its values depend on
which vectorised kernels ATen and MKL pick for this CPU and on how reductions are split across
threads. Another x86-64 CPU picks other kernels, so the test's tolerance must cover that spread.
This script runs the same 4-step ``tiny_cpu`` training once per kernel setting, each in a fresh
process (the settings are read at start-up):

* ``ATEN_CPU_CAPABILITY`` = default | avx2 | avx512 (ATen's own vectorised kernels),
* ``MKL_ENABLE_INSTRUCTIONS`` = SSE4_2 | AVX2 | AVX512 (MKL's GEMM code path),
* 1 and 2 intra-op threads,

and prints, per golden key, the largest relative deviation from the first setting::

    .venv/bin/python benchmarks/golden_variation.py --out /tmp/golden-variation.json

The result and the tolerance derived from it are recorded in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

KEYS = ("loss/critic", "loss/generator", "grad_norm/critic", "grad_norm/generator", "reward/r_final")

SETTINGS: list[dict[str, str]] = [
    {"threads": "1"},
    {"threads": "2"},
    {"threads": "1", "ATEN_CPU_CAPABILITY": "default"},
    {"threads": "1", "ATEN_CPU_CAPABILITY": "avx2"},
    {"threads": "1", "ATEN_CPU_CAPABILITY": "avx512"},
    {"threads": "1", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    {"threads": "1", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    {"threads": "2", "ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
]

_CHILD = """
import json, sys, torch
from stream_r1.config import load_config
from stream_r1.train.entry import run_training
torch.set_num_threads(int(sys.argv[3]))
cfg = load_config("tiny_cpu", [f"checkpoints.root={sys.argv[1]}"])
history = run_training(cfg, sys.argv[2])
print("CURVE" + json.dumps([{k: float(v) for k, v in row.items()} for row in history]))
"""


def run_one(ckpt_root: Path, setting: dict[str, str]) -> list[dict[str, float]]:
    """One training run in a fresh process with ``setting``'s environment; its metric rows."""
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")}
    env.update({k: v for k, v in setting.items() if k != "threads"})
    env["STREAM_R1_PROGRESS"] = "0"
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(ckpt_root), out, setting["threads"]],
                              env=env, capture_output=True, text=True, check=True)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("CURVE"))
    return json.loads(line[len("CURVE"):])


def max_relative_deviation(a: list[dict[str, float]], b: list[dict[str, float]]) -> dict[str, float]:
    """Per key, ``max_step |a - b| / |a|`` over the steps where both curves carry the key."""
    out: dict[str, float] = {}
    for ra, rb in zip(a, b, strict=True):
        for k in KEYS:
            if k in ra and k in rb:
                rel = abs(ra[k] - rb[k]) / max(abs(ra[k]), 1e-30)
                out[k] = max(out.get(k, 0.0), rel)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write the per-setting deviations as JSON here")
    args = parser.parse_args()
    from stream_r1.commands.make_tiny_checkpoints import write_tiny_checkpoints

    with tempfile.TemporaryDirectory() as root:
        write_tiny_checkpoints(Path(root) / "ckpt", seed=0)
        curves = [run_one(Path(root) / "ckpt", s) for s in SETTINGS]
    report = []
    worst = dict.fromkeys(KEYS, 0.0)
    for setting, curve in zip(SETTINGS, curves):
        dev = max_relative_deviation(curves[0], curve)
        report.append({"setting": setting, "max_rel_dev": dev})
        for k, v in dev.items():
            worst[k] = max(worst[k], v)
        print(json.dumps(setting), " ".join(f"{k}={v:.2e}" for k, v in dev.items()))
    print("worst:", " ".join(f"{k}={v:.2e}" for k, v in worst.items()))
    if args.out:
        args.out.write_text(json.dumps({"settings": report, "worst": worst}, indent=2) + "\n")


if __name__ == "__main__":
    main()
