"""Sharded ``torch.distributed.checkpoint`` (DCP) files that are written asynchronously, hashed
where they are written and read back without running code from the checkpoint.

Writing: every rank writes its own shard (``__<rank>_<i>.distcp``, fsynced) and, in the same
background thread, a ``__<rank>.sha256.json`` with the sha256 of the files it wrote, so no rank
re-reads another's data. The coordinator writes DCP's ``.metadata`` and then calls ``on_finish``
(the caller's manifest + atomic publish) while still in the background: training continues as
soon as the state is staged (copied to host memory).

Reading: DCP stores its ``.metadata`` with ``pickle`` and non-tensor values as ``torch.save``
blobs it loads with ``weights_only=False``. :class:`SafeFileSystemReader` unpickles the metadata
with an allow-list (DCP's own metadata dataclasses, ``torch.Size``, dtypes, layouts; nothing else is
constructed) and accepts only plain shard names; :class:`SafeLoadPlanner` loads the blobs with
``weights_only=True``. A tampered checkpoint is a ``ValueError``, never code execution.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata
from torch.distributed.checkpoint.planner import ReadItem, SavePlan, SavePlanner
from torch.distributed.checkpoint.storage import WriteResult
from torch.futures import Future

from stream_r1.utils.io import sha256_file

METADATA = ".metadata"
_SHARD_NAME = re.compile(r"^__\d+_\d+\.distcp$")
_DCP_META = "torch.distributed.checkpoint.metadata"
_ALLOWED_GLOBALS = {
    (_DCP_META, name)
    for name in ("Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
                 "TensorProperties", "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING")
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"),  # StorageMeta.checkpoint_id
    ("pathlib", "Path"),
}


def hash_file_name(rank: int) -> str:
    """``__<rank>.sha256.json``: the sha256 of every shard file ``rank`` wrote."""
    return f"__{rank}.sha256.json"


def _enum_member(cls: Any, name: Any) -> Any:
    """``getattr`` as pickle uses it for enum members, limited to members of allow-listed enums.

    CPython 3.11.2 (Debian bookworm, the images) pickles an enum member as ``getattr(EnumClass, "NAME")``
    where 3.11.7 calls the class with its value, so DCP's ``_MEM_FORMAT_ENCODING`` arrives either way;
    anything but a member name of an enum the allow-list already admitted is refused.
    """
    import enum

    if isinstance(cls, type) and issubclass(cls, enum.Enum) and isinstance(name, str) and name in cls.__members__:
        return cls.__members__[name]
    raise pickle.UnpicklingError(f"getattr({cls!r}, {name!r}) is not an enum member of a DCP metadata type")


class _AllowListUnpickler(pickle.Unpickler):
    """Constructs only DCP metadata classes, ``torch.Size``, dtypes and layouts."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if (module, name) == ("builtins", "getattr"):
            return _enum_member
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not a DCP metadata type")


def read_metadata_safely(path: Path) -> Metadata:
    """Unpickle DCP's ``.metadata`` with the allow-list and check its storage entries.

    Raises:
        ValueError: a type outside the allow-list, a shard name that is not ``__<r>_<i>.distcp``,
            or a stream transform this project never writes.
    """
    try:
        with open(path, "rb") as f:
            metadata = _AllowListUnpickler(f).load()
    except (pickle.UnpicklingError, AttributeError, EOFError, TypeError, ValueError, ImportError) as e:
        raise ValueError(f"refusing to load {path}: not a plain DCP metadata file ({e})") from e
    if not isinstance(metadata, Metadata) or not isinstance(metadata.storage_data, dict):
        raise ValueError(f"refusing to load {path}: not a DCP Metadata object")
    for info in metadata.storage_data.values():
        rel = getattr(info, "relative_path", None)
        if not isinstance(rel, str) or not _SHARD_NAME.match(rel):
            raise ValueError(f"refusing to load {path}: shard name {rel!r} is not __<rank>_<i>.distcp")
        if getattr(info, "transform_descriptors", None):
            raise ValueError(f"refusing to load {path}: stream transforms {info.transform_descriptors} are not used here")
    return metadata


class SafeFileSystemReader(FileSystemReader):
    """:class:`FileSystemReader` whose metadata is read with :func:`read_metadata_safely`."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        from torch.distributed.checkpoint.metadata import StorageMeta

        metadata = read_metadata_safely(Path(self.path) / METADATA)
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class _WeightsOnlyBytes:
    """``load_bytes`` with ``weights_only=True`` (mixed into DCP's load planners)."""

    flatten_state_dict: bool
    original_state_dict: Any
    mappings: Any
    state_dict: Any

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        try:
            obj = torch.load(value, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"refusing to load checkpoint value {read_item.dest_index.fqn!r}: not weights-only ({e})") from e
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


class SafeLoadPlanner(_WeightsOnlyBytes, DefaultLoadPlanner):
    """:class:`DefaultLoadPlanner` that loads non-tensor values with ``weights_only=True``."""


class HashingFileSystemWriter(FileSystemWriter):
    """:class:`FileSystemWriter` that hashes its own shards and hands the coordinator a finish hook.

    Args:
        path: The DCP directory.
        rank: This process's rank (names the hash file).
        on_finish: Called on the coordinator after ``.metadata`` is written (in the saving thread).
    """

    def __init__(self, path: str | os.PathLike, *, rank: int, on_finish: Callable[[], None] | None = None) -> None:
        super().__init__(path, single_file_per_rank=True, sync_files=True, overwrite=True)
        self._rank = rank
        self._on_finish = on_finish

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        results = super().write_data(plan, planner).wait()
        names = sorted({r.storage_data.relative_path for r in results})
        digests = {n: sha256_file(Path(self.path) / n) for n in names}
        target = Path(self.path) / hash_file_name(self._rank)
        with open(target, "w", encoding="utf-8") as f:
            json.dump(digests, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        done: Future[list[WriteResult]] = Future()
        done.set_result(results)
        return done

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        super().finish(metadata, results)
        if self._on_finish is not None:
            self._on_finish()


def shard_digests(path: Path) -> dict[str, str]:
    """``{file name: sha256}`` of every shard, merged from the per-rank hash files (coordinator)."""
    merged: dict[str, str] = {}
    for f in sorted(path.glob("__*.sha256.json")):
        merged.update(json.loads(f.read_text(encoding="utf-8")))
    return merged


def async_save(state: dict[str, Any], path: Path, *, rank: int, process_group: Any | None,
               on_finish: Callable[[], None] | None = None) -> Any:
    """Stage ``state`` to host memory now and write it to ``path`` in a background thread.

    Args:
        state: Nested dict of tensors/DTensors and plain values (the same keys on every rank,
            except rank-0-only plain tensors).
        path: The DCP directory (created).
        rank: This rank.
        process_group: A gloo group for the save's own collectives (None: one process).
        on_finish: See :class:`HashingFileSystemWriter`.

    Returns:
        A future that resolves once every rank's shard and the metadata are written and
        ``on_finish`` has run.
    """
    writer = HashingFileSystemWriter(path, rank=rank, on_finish=on_finish)
    with _quiet_single_process():
        return dcp.async_save(state, storage_writer=writer, process_group=process_group,
                              no_dist=process_group is None)


def load(state: dict[str, Any], path: Path, *, process_group: Any | None) -> None:
    """Load ``path`` into ``state`` in place, resharding to this run's layout (any world size).

    Raises:
        ValueError: the metadata or a value is not plain data (see the module docstring), or
            ``state`` asks for a key the checkpoint does not hold.
    """
    try:
        with _quiet_single_process():
            dcp.load(state, storage_reader=SafeFileSystemReader(path), planner=SafeLoadPlanner(),
                     process_group=process_group, no_dist=process_group is None)
    except CheckpointException as e:
        raise _first_failure(e, path) from e


def _first_failure(e: CheckpointException, path: Path) -> Exception:
    """DCP wraps each rank's failure; surface ours (a ``ValueError``) or a one-line summary."""
    failures = [exc for exc, _ in e.failures.values()]
    for exc in failures:
        if isinstance(exc, ValueError):
            return exc
    first = failures[0] if failures else e
    return ValueError(f"cannot load checkpoint {path}: {type(first).__name__}: {str(first).strip()[:300]}")


def load_full(path: Path) -> dict[str, Any]:
    """The whole checkpoint as full (unsharded) CPU tensors in this one process, whatever world
    size wrote it (inspection, tests, conversion; needs host memory for all of it)."""
    metadata = read_metadata_safely(Path(path) / METADATA)
    state: dict[str, Any] = {}
    for key, meta in metadata.state_dict_metadata.items():
        value = torch.empty(meta.size, dtype=meta.properties.dtype) if isinstance(meta, TensorStorageMetadata) else None
        set_element(state, metadata.planner_data[key] if metadata.planner_data else (key,), value)
    load(state, path, process_group=None)
    return state


@contextlib.contextmanager
def _quiet_single_process() -> Iterator[None]:
    """DCP warns on every single-process call that it assumes one process; that is the intent here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.distributed is disabled")
        yield
