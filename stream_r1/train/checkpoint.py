"""Training checkpoints: atomic directories with a sha256 manifest, keep-last-k, resume auto.

Layout of ``<output>/checkpoints/step_<optimizer step:06d>/`` (training)::

    dcp/                torch.distributed.checkpoint: __<rank>_0.distcp (each rank's shards of
                        {"model": {generator, critic, generator_ema?}, "optim": {generator, critic}}),
                        .metadata, __<rank>.sha256.json (the digests each rank took of its own files)
    trainer_state.json  step counters, config hash, world size, strategy, data-sampler position, EMA meta
    rank_00000.pt ...   per-rank RNG states (torch CPU/CUDA, python, numpy) and rank-local state
                        (the reward balancer's history is rank-local, docs/method.md §3.2 item 3)
    MANIFEST.json       sha256 of every file above (written last)

:func:`save_checkpoint` writes the older full form instead (``model.pt`` / ``optimizers.pt``
gathered on rank 0; kept for comparison, see ``benchmarks/checkpoint_io.py``). A sharded checkpoint is written asynchronously
(:class:`CheckpointWriter`): the state is copied to host memory, training goes on, and DCP's
saving thread writes every rank's shard; when the last shard and DCP's metadata are on disk,
rank 0 (still in that thread) writes the manifest from the per-rank digests, renames the
directory into place and prunes. Either form is written into ``.tmp-step_*`` and renamed only
after every file and the manifest are fsynced, so a crash (even SIGKILL) mid-write leaves the
previous checkpoint intact. DCP reshards on load, so a run resumes at another world size.

Every file is read without running code from it: ``.pt`` files hold tensors and plain containers
only and are read with ``torch.load(weights_only=True)``; DCP's pickled metadata is read with an
allow-list (:mod:`stream_r1.distributed.dcp_io`). A tampered checkpoint, even with its manifest
recomputed, is refused. Python's and numpy's RNG states are stored as integer tensors
(:func:`capture_rng_state`).
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

from stream_r1.distributed import dcp_io
from stream_r1.distributed.collectives import barrier, checkpoint_group
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
        models: ``{"generator", "critic", "generator_ema"?}`` full state dicts (full form).
        optimizers: ``{"generator", "critic"}`` full optimizer states (full form).
        sharded: The DCP state of the sharded form: ``{"model": {...}, "optim": {...}}`` with each
            rank's DTensor shards (plain tensors where nothing is sharded).
        state: JSON-serialisable trainer state (counters, config hash, sampler, ...).
        rank_state: This rank's RNG and rank-local state: tensors and plain containers only
            (loaded with ``weights_only=True``).
    """

    models: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    optimizers: dict[str, dict[str, Any]] = field(default_factory=dict)
    sharded: dict[str, Any] = field(default_factory=dict)
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


def _prepare_staging(output_dir: str | Path, optimizer_step: int, payload: CheckpointPayload,
                     rank: int) -> tuple[Path, Path]:
    """Create ``.tmp-step_*`` (rank 0), write every rank's ``rank_*.pt`` and rank 0's trainer state."""
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
    if rank == 0:
        atomic_write_json(staging / "trainer_state.json", payload.state)
    barrier()
    return staging, final


def _publish(staging: Path, final: Path, optimizer_step: int, keep_last: int,
             known: dict[str, str] | None = None) -> None:
    """Rank 0: manifest (sha256 of every file; ``known`` digests are taken as given), rename, prune."""
    digests = dict(known or {})
    for f in sorted(p for p in staging.rglob("*") if p.is_file()):
        name = f.relative_to(staging).as_posix()
        if name not in digests:
            digests[name] = sha256_file(f)
    atomic_write_json(staging / MANIFEST, {"optimizer_step": optimizer_step, "files": dict(sorted(digests.items()))})
    for d in [p for p in staging.rglob("*") if p.is_dir()] + [staging]:
        _fsync_dir(d)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    _fsync_dir(final.parent)
    _prune(final.parent, keep_last)
    log.info("checkpoint written: %s", final)


def save_checkpoint(
    output_dir: str | Path,
    optimizer_step: int,
    payload: CheckpointPayload,
    *,
    rank: int,
    keep_last: int,
    on_partial_write: Callable[[], None] | None = None,
) -> Path:
    """Write a full-form checkpoint synchronously; all ranks call this (barriers inside).

    Args:
        output_dir: The run directory.
        optimizer_step: Optimizer steps completed (names the directory).
        payload: What to store (``models``/``optimizers`` on rank 0).
        rank: This process's rank (rank 0 writes the shared files and publishes).
        keep_last: Checkpoints to keep; older ``step_*`` directories are deleted after publishing.
        on_partial_write: Test hook called on rank 0 after ``model.pt`` is written (crash tests).

    Returns:
        The published checkpoint directory.
    """
    staging, final = _prepare_staging(output_dir, optimizer_step, payload, rank)
    if rank == 0:
        _save_torch(payload.models, staging / "model.pt")
        if on_partial_write is not None:
            on_partial_write()
        _save_torch(payload.optimizers, staging / "optimizers.pt")
        _publish(staging, final, optimizer_step, keep_last)
    barrier()
    return final


class CheckpointWriter:
    """Writes sharded checkpoints asynchronously, one at a time (all ranks hold one).

    Args:
        output_dir: The run directory.
        rank: This process's rank.
        keep_last: Checkpoints to keep after each publish.

    The DCP save runs on its own gloo group (:func:`checkpoint_group`) so that its collectives,
    issued from the saving thread, never interleave with the training loop's.
    """

    def __init__(self, output_dir: str | Path, *, rank: int, keep_last: int) -> None:
        self.output_dir, self.rank, self.keep_last = Path(output_dir), rank, keep_last
        self.group = checkpoint_group()
        self._pending: Any = None
        self._pending_path: Path | None = None

    def save(self, optimizer_step: int, payload: CheckpointPayload,
             on_partial_write: Callable[[], None] | None = None) -> None:
        """Start writing ``payload`` (``sharded`` + state); returns once the state is staged.

        Args:
            optimizer_step: Names the directory.
            payload: ``sharded`` (DCP state), ``state`` (rank 0), ``rank_state`` (every rank).
            on_partial_write: Test hook, on rank 0 in the saving thread after every shard and
                DCP's metadata are written and before the manifest and the rename (crash tests).
        """
        self.wait()
        staging, final = _prepare_staging(self.output_dir, optimizer_step, payload, self.rank)
        publish = None
        if self.rank == 0:
            def publish() -> None:
                if on_partial_write is not None:
                    on_partial_write()
                dcp_dir = staging / "dcp"
                shards = dcp_io.shard_digests(dcp_dir)
                named = {info.relative_path for info in dcp_io.read_metadata_safely(dcp_dir / dcp_io.METADATA)
                         .storage_data.values()}
                if not named <= set(shards):
                    raise RuntimeError(f"checkpoint {staging}: shards {sorted(named - set(shards))} have no digest")
                _publish(staging, final, optimizer_step, self.keep_last, {f"dcp/{n}": d for n, d in shards.items()})
        self._pending = dcp_io.async_save(payload.sharded, staging / "dcp", rank=self.rank,
                                          process_group=self.group, on_finish=publish)
        self._pending_path = final

    def wait(self) -> Path | None:
        """Block until the checkpoint in flight is published on every rank; returns its path."""
        if self._pending is None:
            return None
        future = self._pending
        self._pending = None
        response = getattr(future, "upload_completion", future)
        response.result()
        return self._pending_path


def _fsync_dir(directory: Path) -> None:
    """fsync a directory so the names in it (renames, new files) are durable."""
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
    files = manifest.get("files", {})
    for name, digest in files.items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ValueError(f"checkpoint {path}: {MANIFEST} names {name!r} outside the checkpoint")
        f = path / name
        if not f.is_file():
            raise ValueError(f"checkpoint {path} is missing {name}")
        if sha256_file(f) != digest:
            raise ValueError(f"checkpoint {path}: sha256 of {name} does not match {MANIFEST}")
    sharded = f"dcp/{dcp_io.METADATA}" in files
    for required in ("trainer_state.json", *(() if sharded else ("model.pt", "optimizers.pt"))):
        if required not in files:
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


def is_sharded(path: str | Path) -> bool:
    """True for a DCP (sharded) checkpoint, False for the full form."""
    return (Path(path) / "dcp" / dcp_io.METADATA).is_file()


def load_checkpoint(path: str | Path, rank: int) -> CheckpointPayload:
    """Load a verified checkpoint's state, this rank's ``rank_state`` and (full form) models.

    Full form: models and optimizer states are read on rank 0 only (others get empty dicts and
    receive them by broadcast when loading into FSDP2 modules). Sharded form: ``models`` and
    ``optimizers`` stay empty; load them with :func:`load_sharded`. A rank without its own
    ``rank_*.pt`` (resuming at a larger world size) gets an empty ``rank_state``.
    """
    path = Path(path)
    state = read_trainer_state(path)
    models: dict[str, Any] = {}
    optimizers: dict[str, Any] = {}
    if rank == 0 and not is_sharded(path):
        models = load_weights_only(path / "model.pt")
        optimizers = load_weights_only(path / "optimizers.pt")
    rank_file = path / f"rank_{rank:05d}.pt"
    rank_state = load_weights_only(rank_file) if rank_file.is_file() else {}
    return CheckpointPayload(models=models, optimizers=optimizers, state=state, rank_state=rank_state)


def check_resume_strategy(path: str | Path, state: dict[str, Any], strategy: str) -> None:
    """A checkpoint resumes under the ``parallel.strategy`` that wrote it (its optimizer state's layout).

    Raises:
        ValueError: another strategy wrote it; the message gives the ``--set`` that resumes it.
    """
    saved = state.get("strategy", strategy)
    if saved != strategy:
        raise ValueError(f"checkpoint {path} was written under parallel.strategy={saved}, this run uses {strategy}; "
                         f"resume it with --set parallel.strategy={saved}")


def load_sharded(path: str | Path, template: dict[str, Any]) -> None:
    """Fill ``template`` (this run's sharded state dict: its keys, shapes and layout) from a sharded
    checkpoint, resharding as needed; every rank calls this.

    Raises:
        ValueError: the metadata or a value is not plain data, or the checkpoint lacks a key.
    """
    dcp_io.load(template, Path(path) / "dcp", process_group=checkpoint_group())


def load_full_tensors(path: str | Path) -> dict[str, Any]:
    """A sharded checkpoint's ``{"model": {...}, "optim": {...}}`` as full CPU tensors, in one process
    (inspection and tests; the run itself resumes with :func:`load_sharded`)."""
    return dcp_io.load_full(Path(path) / "dcp")
