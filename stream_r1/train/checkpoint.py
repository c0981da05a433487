"""Training checkpoints: atomic directories with a sha256 manifest, keep-last-k, resume auto.

Layout of ``<output>/checkpoints/step_<optimizer step:06d>/``::

    model.pt            {"generator", "critic"[, "generator_ema"]}: full FQN-keyed state dicts
    optimizers.pt       {"generator", "critic"}: full FQN-keyed optimizer states
    trainer_state.json  step counters, config hash, world size, data-sampler position, EMA meta
    rank_00000.pt ...   per-rank RNG states (torch CPU/CUDA, python, numpy) and rank-local state
                        (the reward balancer's history is rank-local, docs/method.md §3.2 item 3)
    MANIFEST.json       sha256 of every file above (written last)

Every ``.pt`` file holds tensors and plain containers only and is read with
``torch.load(weights_only=True)``: a checkpoint is data, and a tampered one (even with its manifest
recomputed) cannot run code when a run resumes from it. Python's and numpy's RNG states are stored
as integer tensors (:func:`capture_rng_state`).

A checkpoint is written into ``.tmp-step_*`` and renamed into place only after every file and the
manifest are fsynced, so a crash (even SIGKILL) mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stream_r1.distributed.collectives import barrier
from stream_r1.utils.io import atomic_write_json, sha256_file
from stream_r1.utils.logging import get_logger

log = get_logger(__name__)

MANIFEST = "MANIFEST.json"
_STEP_DIR = re.compile(r"^step_(\d{6,})$")


def checkpoint_root(output_dir: str | Path) -> Path:
    """The folder holding a run's checkpoints."""
    return Path(output_dir) / "checkpoints"


def step_dir_name(optimizer_step: int) -> str:
    """``step_000012`` for optimizer step 12."""
    return f"step_{optimizer_step:06d}"


@dataclass
class CheckpointPayload:
    """What a checkpoint holds. ``models``/``optimizers`` matter on rank 0 only.

    Attributes:
        models: ``{"generator", "critic", "generator_ema"?}`` full state dicts.
        optimizers: ``{"generator", "critic"}`` full optimizer states.
        state: JSON-serialisable trainer state (counters, config hash, sampler, ...).
        rank_state: This rank's RNG and rank-local state: tensors and plain containers only
            (loaded with ``weights_only=True``).
    """

    models: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    optimizers: dict[str, dict[str, Any]] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    rank_state: dict[str, Any] = field(default_factory=dict)


def capture_rng_state() -> dict[str, Any]:
    """Global RNG states of this process as tensors and plain values (weights-only loadable).

    Returns:
        ``{"torch_cpu": ByteTensor, "python": {"version", "internal": int64 [625], "gauss_next"},
        "numpy": {"bit_generator", "key": int64 [624], "pos", "has_gauss", "cached_gaussian"},
        "cuda"?: [ByteTensor per device]}``.
    """
    version, internal, gauss_next = random.getstate()
    name, key, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "torch_cpu": torch.get_rng_state(),
        # MT19937 words are < 2**32: exact in int64.
        "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "numpy": {"bit_generator": str(name), "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states only if CUDA is present)."""
    torch.set_rng_state(state["torch_cpu"])
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["internal"].tolist()), py["gauss_next"]))
    n = state["numpy"]
    np.random.set_state((n["bit_generator"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_weights_only(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU; a file that needs unpickling is a ``ValueError``.

    Raises:
        ValueError: the file holds anything but tensors and plain containers (a tampered or
            foreign file), or is not a torch file at all; nothing in it is executed.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError (not a zip), EOFError, ...
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(e))
        why = f"it asks to import {found.group(1)}" if found else f"{type(e).__name__}"
        raise ValueError(
            f"refusing to load {path}: it is not a weights-only torch file (tensors and plain containers; {why}); "
            "delete this checkpoint or resume from another one"
        ) from e


def _save_torch(obj: Any, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(
    output_dir: str | Path,
    optimizer_step: int,
    payload: CheckpointPayload,
    *,
    rank: int,
    keep_last: int,
    on_partial_write: Callable[[], None] | None = None,
) -> Path:
    """Write a checkpoint atomically; all ranks call this (barriers inside).

    Args:
        output_dir: The run directory.
        optimizer_step: Optimizer steps completed (names the directory).
        payload: What to store.
        rank: This process's rank (rank 0 writes the shared files and publishes).
        keep_last: Checkpoints to keep; older ``step_*`` directories are deleted after publishing.
        on_partial_write: Test hook called on rank 0 after ``model.pt`` is written (crash tests).

    Returns:
        The published checkpoint directory.
    """
    root = checkpoint_root(output_dir)
    final = root / step_dir_name(optimizer_step)
    staging = root / f".tmp-{final.name}"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
    barrier()
    _save_torch(payload.rank_state, staging / f"rank_{rank:05d}.pt")
    barrier()
    if rank == 0:
        _save_torch(payload.models, staging / "model.pt")
        if on_partial_write is not None:
            on_partial_write()
        _save_torch(payload.optimizers, staging / "optimizers.pt")
        atomic_write_json(staging / "trainer_state.json", payload.state)
        files = sorted(p.name for p in staging.iterdir() if p.is_file())
        manifest = {"optimizer_step": optimizer_step, "files": {n: sha256_file(staging / n) for n in files}}
        atomic_write_json(staging / MANIFEST, manifest)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        _fsync_dir(root)
        _prune(root, keep_last)
        log.info("checkpoint written: %s", final)
    barrier()
    return final


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Published checkpoint directories, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def _prune(root: Path, keep_last: int) -> None:
    published = list_checkpoints(root.parent)
    for old in published[: max(0, len(published) - max(1, keep_last))]:
        shutil.rmtree(old, ignore_errors=True)
    for tmp in root.glob(".tmp-step_*"):
        shutil.rmtree(tmp, ignore_errors=True)


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check a checkpoint against its manifest.

    Returns:
        The parsed manifest.

    Raises:
        ValueError: missing manifest/file or a sha256 mismatch (the message names the file).
    """
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise ValueError(f"checkpoint {path} has no {MANIFEST} (incomplete write?)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"checkpoint {path}: {MANIFEST} is not valid JSON ({e})") from e
    for name, digest in manifest.get("files", {}).items():
        f = path / name
        if not f.is_file():
            raise ValueError(f"checkpoint {path} is missing {name}")
        if sha256_file(f) != digest:
            raise ValueError(f"checkpoint {path}: sha256 of {name} does not match {MANIFEST}")
    for required in ("model.pt", "optimizers.pt", "trainer_state.json"):
        if required not in manifest.get("files", {}):
            raise ValueError(f"checkpoint {path}: {MANIFEST} does not list {required}")
    return manifest


def find_resume_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest checkpoint under ``output_dir`` that verifies; corrupt ones are skipped with a warning.

    Returns:
        The checkpoint directory, or None when the run has no checkpoints at all.

    Raises:
        ValueError: checkpoints exist but none verifies. Starting from step 0 instead would
            silently discard the run (and keep-last-k would then delete the evidence), so the
            operator decides: the message names every checkpoint's fault and the way out.
    """
    published = list_checkpoints(output_dir)
    faults: list[str] = []
    for path in reversed(published):
        try:
            verify_checkpoint(path)
        except ValueError as e:
            log.warning("skipping corrupt checkpoint %s: %s", path, e)
            faults.append(f"{path.name}: {e}")
            continue
        return path
    if published:
        root = checkpoint_root(output_dir)
        raise ValueError(
            f"--resume auto: none of the {len(published)} checkpoints under {root} verifies "
            f"({'; '.join(faults)}); refusing to restart from step 0 over them. Move {root} aside "
            "to start this run afresh, or resume from a good copy with --resume PATH"
        )
    return None


def read_trainer_state(path: str | Path) -> dict[str, Any]:
    """The ``trainer_state.json`` of a checkpoint (cheap; no tensors loaded)."""
    return json.loads((Path(path) / "trainer_state.json").read_text(encoding="utf-8"))


def load_checkpoint(path: str | Path, rank: int) -> CheckpointPayload:
    """Load a verified checkpoint for ``rank``.

    Models and optimizer states are read on rank 0 only (others get empty dicts and receive them
    by broadcast when loading into FSDP2 modules). A rank without its own ``rank_*.pt`` (resuming
    at a larger world size) gets an empty ``rank_state``.
    """
    path = Path(path)
    state = read_trainer_state(path)
    models: dict[str, Any] = {}
    optimizers: dict[str, Any] = {}
    if rank == 0:
        models = load_weights_only(path / "model.pt")
        optimizers = load_weights_only(path / "optimizers.pt")
    rank_file = path / f"rank_{rank:05d}.pt"
    rank_state = load_weights_only(rank_file) if rank_file.is_file() else {}
    return CheckpointPayload(models=models, optimizers=optimizers, state=state, rank_state=rank_state)
