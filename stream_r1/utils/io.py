"""Atomic writes and content hashes: nothing already written is lost to a crash mid-write."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed in ``chunk_bytes`` pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` then fsync and rename onto ``path`` (same directory).

    A crash before the rename leaves the previous ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Atomically write UTF-8 ``text`` to ``path``."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented, key-sorted JSON."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def atomic_publish_dir(staging: str | Path, target: str | Path) -> Path:
    """Move a fully written ``staging`` directory onto ``target`` (replacing an old one last)."""
    staging, target = Path(staging), Path(target)
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    _fsync_dir(target.parent)
    if old.exists():
        shutil.rmtree(old)
    return target


PACKAGE_PREFIX = "package:stream_r1/"


def package_path(path: str | Path) -> Path:
    """``package:stream_r1/<rel>`` -> that file inside the installed package (present in every image and
    independent of the working directory); any other path unchanged."""
    text = str(path)
    if text.startswith(PACKAGE_PREFIX):
        return Path(__file__).resolve().parents[1] / text[len(PACKAGE_PREFIX):]
    return Path(path)


def read_prompt_file(path: str | Path, *, setting: str = "the prompt file") -> list[str]:
    """Non-empty, stripped lines of a UTF-8 prompt file (one prompt per line).

    Args:
        path: the file, or ``package:stream_r1/<rel>`` for one shipped in the package (:func:`package_path`).
        setting: where the user set the path (named in the error, e.g. ``data.prompts`` or ``--prompts``).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file holds no prompt.
    """
    path = package_path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"prompt file {str(path)!r} does not exist; set {setting} to a file with one prompt per line"
        )
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"prompt file {str(path)!r} is empty (no non-empty lines); add one prompt per line")
    return prompts


SAFETENSORS_HEADER_LIMIT = 100 * 1024 * 1024
"""The safetensors format caps its JSON header at 100 MB; a larger length means a corrupt file."""


def check_safetensors_file(path: str | Path) -> None:
    """Check that a ``.safetensors`` file is complete, reading only its header.

    The format is an 8-byte little-endian header length, a JSON header whose entries give each
    tensor's ``data_offsets`` into the byte buffer that follows, then that buffer. A truncated
    download or copy ends before the largest offset.

    Raises:
        ValueError: the file is shorter than its header says, or the header does not parse.
    """
    import struct

    path = Path(path)
    size = path.stat().st_size
    fix = "re-download or re-copy it (tiny models: `stream-r1 make-tiny-checkpoints DIR` rebuilds them)"
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path} is truncated ({size} bytes, not even a safetensors header); {fix}")
        (n,) = struct.unpack("<Q", head)
        if n > min(SAFETENSORS_HEADER_LIMIT, size - 8):
            raise ValueError(f"{path} is truncated or not a safetensors file (header of {n} bytes, file of "
                             f"{size}); {fix}")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError(f"{path} has a corrupt safetensors header; {fix}") from None
    ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    needed = 8 + n + max(ends, default=0)
    if size < needed:
        raise ValueError(f"{path} is truncated: {size} bytes, its header needs {needed}; {fix}")


def check_safetensors_under(paths: dict[str, Path]) -> None:
    """:func:`check_safetensors_file` on every ``.safetensors`` file at or under each path.

    Args:
        paths: ``{setting name: file or directory}`` (missing paths are skipped: existence is
            checked, with its own message, elsewhere).
    """
    for p in paths.values():
        p = Path(p)
        files = [p] if p.is_file() else sorted(p.rglob("*.safetensors")) if p.is_dir() else []
        for f in files:
            if f.suffix == ".safetensors":
                check_safetensors_file(f)
