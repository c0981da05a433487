"""The published student: one stock diffusers directory, content-addressed so a registered URI never changes.

``build_export`` picks the network the run is judged by (``generator_ema`` when the trainer wrote one,
else ``generator``) from the trainer's ``final/`` folder and copies exactly what
``WanTransformer3DModel.from_pretrained`` reads (``config.json``, the safetensors file or shards and
their index) plus ``stream_r1_export.json`` (run id, config hash, network, class). ``publish_export``
uploads it to ``runs/<run-id>/export/<id>/`` where ``<id>`` is the sha256 of its manifest: the same
bytes always land at the same prefix, different bytes (a rerun with the same run id) at another one,
so objects a registered version points to are never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from stream_r1.ops.store import ArtifactStore, local_manifest
from stream_r1.utils.io import atomic_write_json
from stream_r1.utils.logging import get_logger

log = get_logger(__name__)

EXPORT_META = "stream_r1_export.json"
NETWORKS = ("generator_ema", "generator")
"""Preference order: the EMA weights are what the paper evaluates and ships."""


def find_network(run_dir: str | Path) -> Path:
    """The diffusers directory the run publishes: ``final/generator_ema/`` if present, else ``final/generator/``.

    Raises:
        FileNotFoundError: the trainer wrote no export.
    """
    for name in NETWORKS:
        candidate = Path(run_dir) / "final" / name
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(f"no exported student (final/generator/config.json) in {run_dir}; "
                            "did `stream-r1 train` finish its final export?")


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link (no bytes copied; the trainer replaces ``final/`` by renaming, never rewrites a file in place),
    or copy across file systems."""
    try:
        dst.hardlink_to(src)
    except OSError:
        shutil.copyfile(src, dst)


def build_export(run_dir: str | Path, out_dir: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``out_dir`` = the chosen network's ``config.json`` + safetensors (+ index) + ``stream_r1_export.json``.

    Args:
        run_dir: The trainer's run directory (holds ``final/``).
        out_dir: Destination (replaced).
        metadata: Provenance recorded in ``stream_r1_export.json`` (must be deterministic: it is hashed).
    """
    src = find_network(run_dir)
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        if f.is_file() and (f.name == "config.json" or f.name.endswith((".safetensors", ".safetensors.index.json"))):
            _link_or_copy(f, out / f.name)
    atomic_write_json(out / EXPORT_META, {**metadata, "network": src.name,
                                          "load_with": "diffusers.WanTransformer3DModel.from_pretrained",
                                          "student_class": "stream_r1.models.causal_wan.CausalWanTransformer"})
    return out


def export_id(files: dict[str, dict[str, Any]]) -> str:
    """16 hex digits of the sha256 of a manifest table: the export's address."""
    return hashlib.sha256(json.dumps(files, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def publish_export(store: ArtifactStore, export_dir: str | Path, run_id: str) -> str:
    """Upload ``export_dir`` to ``runs/<run-id>/export/<export_id>/`` (skipped when already there); returns its URI."""
    files = local_manifest(export_dir)
    prefix = f"runs/{run_id}/export/{export_id(files)}"
    if store.manifest(prefix) == files:
        log.info("export %s already published", store.uri(prefix))
    else:
        store.upload_dir(export_dir, prefix, files)
    return store.uri(prefix)
