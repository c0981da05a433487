"""benchmarks/streaming_latency.py runs on the tiny config and computes the window ratio check correctly."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest


def _bench(repo_root: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("streaming_latency", repo_root / "benchmarks" / "streaming_latency.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


def test_ratio_definition(repo_root: Path) -> None:
    bench = _bench(repo_root)
    r = bench.CaseResult("window", 60, chunk_ms=[100.0] + [10.0] * 10 + [12.0] * 9 + [11.0] * 10)
    assert r.ratio() == pytest.approx(11.0 / 10.0)
    assert bench.CaseResult("window", 3, chunk_ms=[1.0] * 19).ratio() is None


def test_tiny_benchmark_runs_both_cache_modes(repo_root: Path, tmp_path: Path) -> None:
    bench = _bench(repo_root)
    out = tmp_path / "bench.json"
    assert bench.main(["--frames", "12", "--with-vae", "--repeats", "1", "--output", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["meta"]["latent_hw"] == [4, 4] and data["meta"]["with_vae"] is True
    window, full = data["results"]
    assert (window["mode"], full["mode"]) == ("window", "full")
    assert window["num_chunks"] == full["num_chunks"] == 4
    # The rolling cache holds local_attn_frames=9 frames; the full cache all 12.
    assert full["cache_bytes"] * 9 == window["cache_bytes"] * 12
    assert all(ms > 0 for ms in window["chunk_ms"] + full["chunk_ms"])
