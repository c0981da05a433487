"""benchmarks/streaming_latency.py runs on the tiny config and computes the window ratio check correctly."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch


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
    # the script pins torch's thread count for its clock; give the rest of the session its own back
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--frames", "12", "--with-vae", "--repeats", "1", "--output", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    data = json.loads(out.read_text())
    assert data["meta"]["latent_hw"] == [4, 4] and data["meta"]["with_vae"] is True
    window, full = data["results"]
    assert (window["mode"], full["mode"]) == ("window", "full")
    assert window["num_chunks"] == full["num_chunks"] == 4
    # The rolling cache holds local_attn_frames=9 frames; the full cache all 12.
    assert full["cache_bytes"] * 9 == window["cache_bytes"] * 12
    assert all(ms > 0 for ms in window["chunk_ms"] + full["chunk_ms"])


def test_full_size_mode_is_the_1_3b_geometry(repo_root: Path) -> None:
    import torch

    bench = _bench(repo_root)
    args = bench._parse(["--device", "cuda", "--full-size"])
    assert args.latent_hw == (60, 104) and args.dtype == "bfloat16" and args.with_vae and args.clock == "wall"
    assert args.text_len == 512 and args.steps == pytest.approx([1000.0, 937.5, 833.3333, 625.0], abs=1e-3)
    model = bench.build_student(True, torch.device("meta"), torch.bfloat16, seed=0)
    assert 1.40e9 < sum(p.numel() for p in model.parameters()) < 1.45e9  # docs/method.md §6.2: 1.42 B
    assert model.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert model.blocks[0].scale_shift_table.dtype == torch.float32  # diffusers keeps modulation in fp32
    with pytest.raises(SystemExit):
        bench._parse(["--device", "cuda", "--clock", "cpu"])
