"""Output-location checks that run before any heavy work (torch-free).

A command that will write for minutes should learn in a millisecond that its output is a file, sits
on a read-only mount or on a full disk. Each check writes a small probe file where the output goes
(or in the nearest existing parent) and removes it; every failure is a ``ValueError`` naming the
flag, the path and the fix (the CLI prints it as one line, exit status 2).
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

PROBE_BYTES = 64 * 1024
"""Size of the probe write: large enough that a full (or nearly full) filesystem refuses it."""


def describe_os_error(e: OSError, path: str | Path | None = None) -> str:
    """One line for an ``OSError`` raised while writing: the path, the reason and what to do."""
    where = str(e.filename) if e.filename else (str(path) if path is not None else "")
    reason = e.strerror or str(e)
    fixes = {
        errno.ENOSPC: "free some space or choose a path on another filesystem",
        errno.EDQUOT: "free some space or choose a path on another filesystem",
        errno.EROFS: "the filesystem is mounted read-only; choose a writable path",
        errno.EACCES: "no permission to write there; choose a writable path",
        errno.EPERM: "no permission to write there; choose a writable path",
        errno.EEXIST: "a file is in the way; remove it or choose another path",
        errno.ENOTDIR: "a path component is a file, not a directory; choose another path",
        errno.EISDIR: "that is a directory; pass a file path",
    }
    fix = fixes.get(e.errno or 0, "check the path and the filesystem")
    return f"cannot write {where!r}: {reason}; {fix}" if where else f"{reason}; {fix}"


def _probe(directory: Path, flag: str, shown: Path) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=".stream-r1-probe-", dir=directory)
    except OSError as e:
        raise ValueError(f"{flag} {str(shown)!r}: {describe_os_error(e, directory)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"\0" * PROBE_BYTES)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise ValueError(f"{flag} {str(shown)!r}: {describe_os_error(e, directory)}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_dir(path: str | Path, flag: str = "--output") -> Path:
    """Make sure ``path`` is (or can become) a writable directory with room for a write.

    Nothing is created: the probe is written in ``path`` when it exists, else in its nearest
    existing parent (where ``mkdir`` would create it).

    Args:
        path: The output directory.
        flag: The option the user set (named in the error, e.g. ``--output`` or ``--workdir``).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: ``path`` or one of its parents is a file, or the location is read-only, not
            permitted or full.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a file, not a directory; remove it or choose another {flag}")
    existing = _nearest_existing(path.absolute())
    if not existing.is_dir():
        raise ValueError(f"{flag} {str(path)!r}: {str(existing)!r} is a file, not a directory; choose another {flag}")
    _probe(existing, flag, path)
    return path


def check_output_file(path: str | Path, flag: str = "--output") -> Path:
    """Make sure the file ``path`` can be written (probed in its directory or nearest existing parent).

    Raises:
        ValueError: ``path`` is a directory, a parent is a file, or the location is read-only or full.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a directory; pass a file path (e.g. {str(path / 'out.yaml')!r})")
    existing = _nearest_existing(path.absolute().parent)
    if not existing.is_dir():
        raise ValueError(f"{flag} {str(path)!r}: {str(existing)!r} is a file, not a directory; choose another {flag}")
    _probe(existing, flag, path)
    return path
