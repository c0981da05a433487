"""Speed metrics from generation.json (written by ``stream_r1.sample.generate``).

Streaming generation is judged by throughput (FPS = pixel frames per second of wall time) and by
per-chunk latency, in particular the first chunk (time until frames can be shown).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

GENERATION_FILE = "generation.json"


def _latencies(entry: dict[str, Any]) -> list[float]:
    for key in ("chunk_latency_ms", "chunk_latencies_ms", "latency_ms"):
        val = entry.get(key)
        if isinstance(val, Sequence) and not isinstance(val, str):
            return [float(x) for x in val]
    return []


def _videos(generation: dict[str, Any]) -> list[dict[str, Any]]:
    vids = generation.get("videos")
    if isinstance(vids, list) and all(isinstance(v, dict) for v in vids):
        return vids
    return [generation]


def speed_metrics(generation: dict[str, Any]) -> dict[str, float]:
    """``fps``, ``chunk_latency_ms_{mean,p50,p90,max}`` and ``first_chunk_latency_ms``.

    Args:
        generation: the parsed generation.json: per-video entries under ``videos`` (each with
            ``chunk_latency_ms: [ms per chunk]`` and ``fps``) and/or the same keys at top level.

    Returns:
        The keys that can be computed (empty when the file carries no timing).
    """
    videos = _videos(generation)
    per_chunk = [lat for v in videos for lat in _latencies(v)]
    first = [_latencies(v)[0] for v in videos if _latencies(v)]
    out: dict[str, float] = {}
    fps_values = [float(v["fps"]) for v in videos if isinstance(v.get("fps"), (int, float))]
    if isinstance(generation.get("fps"), (int, float)):
        out["fps"] = float(generation["fps"])
    elif fps_values:
        out["fps"] = float(np.mean(fps_values))
    if per_chunk:
        arr = np.asarray(per_chunk, dtype=np.float64)
        out["chunk_latency_ms_mean"] = float(arr.mean())
        out["chunk_latency_ms_p50"] = float(np.percentile(arr, 50))
        out["chunk_latency_ms_p90"] = float(np.percentile(arr, 90))
        out["chunk_latency_ms_max"] = float(arr.max())
        out["first_chunk_latency_ms"] = float(np.mean(first))
    return out


def read_generation(path: str | Path) -> dict[str, Any] | None:
    """Parse generation.json from a file or directory; ``None`` when absent."""
    p = Path(path)
    if p.is_dir():
        p = p / GENERATION_FILE
    if not p.is_file():
        return None
    data = json.loads(p.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a JSON object, got {type(data).__name__}")
    return data
