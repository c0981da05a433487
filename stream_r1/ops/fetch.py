"""Fetch checkpoints (teacher, student init, VAE, text encoder, reward model) into the artifact store.

A *source spec* is either one URI for a whole checkpoint tree, or comma-separated ``name=URI``
entries that each become the sub-directory ``name``:

- a local directory (``/abs/dir``, ``./dir`` or ``file:///abs/dir``), e.g. ``make-tiny-checkpoints`` output;
- an S3 prefix on the same endpoint (``s3://bucket/prefix``) holding a ``MANIFEST.sha256.json``;
- a Hugging Face hub repo (``hf://org/repo[@revision]``) — allowed ONLY here and only inside a
  cluster (``KUBERNETES_SERVICE_HOST`` set), never on the CI machine.

Everything lands under ``<prefix>/`` in the store with a sha256 manifest (objects already present
and verified are skipped, so a retried fetch re-sends only what is missing), then is downloaded,
verified, into the step's output directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from stream_r1.ops.store import ArtifactStore, TransferReport
from stream_r1.utils.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class FetchResult:
    """What ``fetch_checkpoints`` did."""

    uri: str
    """``s3://bucket/<prefix>`` holding the checkpoints and their manifest."""
    local_dir: str
    """Verified local copy."""
    num_files: int
    sent: int
    """Objects uploaded by this call."""
    skipped: int
    """Objects already in the store with the right sha256."""


def parse_source(spec: str) -> dict[str, str]:
    """``"URI"`` -> ``{"": URI}``; ``"a=URI1,b=URI2"`` -> ``{"a": URI1, "b": URI2}``.

    Raises:
        ValueError: empty spec, an empty name or URI, or a duplicate name.
    """
    spec = spec.strip()
    if not spec:
        raise ValueError("checkpoint source is empty; pass a directory, s3://bucket/prefix, hf://org/repo, "
                         "or name=URI,name=URI")
    if "=" not in spec.split(",")[0].split("://")[0]:
        return {"": spec}
    out: dict[str, str] = {}
    for item in spec.split(","):
        name, sep, uri = item.partition("=")
        name, uri = name.strip(), uri.strip()
        if not sep or not name or not uri or name in out:
            raise ValueError(f"bad checkpoint source entry {item!r} in {spec!r}: expected unique name=URI pairs")
        out[name] = uri
    return out


def _stage_hf(uri: str, dest: Path) -> None:
    if not os.environ.get("KUBERNETES_SERVICE_HOST"):
        raise ValueError(f"source {uri!r}: Hugging Face hub downloads run only inside the cluster's fetch step; "
                         "locally use a directory from `stream-r1 make-tiny-checkpoints DIR` or an s3:// prefix")
    from huggingface_hub import snapshot_download

    repo, _, rev = uri[len("hf://"):].partition("@")
    snapshot_download(repo_id=repo, revision=rev or None, local_dir=str(dest))


def _stage(uri: str, store: ArtifactStore, dest: Path) -> Path:
    """Return a local directory holding the source ``uri`` (copied into ``dest`` when remote)."""
    if uri.startswith("hf://"):
        _stage_hf(uri, dest)
        return dest
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        src = store if bucket == store.bucket else ArtifactStore(store.credentials, bucket)
        return src.download_dir(prefix, dest)
    path = Path(uri[len("file://"):] if uri.startswith("file://") else uri).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint source {uri!r} is not a directory; create one with "
                                "`stream-r1 make-tiny-checkpoints DIR` or pass s3://bucket/prefix")
    return path


def fetch_checkpoints(source: str, store: ArtifactStore, prefix: str, local_dir: str | Path) -> FetchResult:
    """Copy the checkpoints named by ``source`` to ``store:<prefix>/`` and a verified ``local_dir``.

    Args:
        source: Source spec (module docstring).
        store: Destination store (bucket created if missing).
        prefix: Destination key prefix, e.g. ``runs/<run-id>/checkpoints``.
        local_dir: Where the verified copy goes (the step's output artifact).
    """
    sources = parse_source(source)
    store.ensure_bucket()
    report = TransferReport()
    prefix = prefix.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="stream-r1-fetch-") as tmp:
        for name, uri in sources.items():
            staged = _stage(uri, store, Path(tmp) / (name or "root"))
            sub = f"{prefix}/{name}" if name else prefix
            report.merge(store.upload_dir(staged, sub))
        local_dir = Path(local_dir)
        if local_dir.exists():
            shutil.rmtree(local_dir)
        for name in sources:
            store.download_dir(f"{prefix}/{name}" if name else prefix, local_dir / name)
    num_files = sum(1 for p in local_dir.rglob("*") if p.is_file())
    log.info("fetched %s -> %s (%d files; %d objects sent, %d already present)", source, store.uri(prefix),
             num_files, len(report.sent), len(report.skipped))
    return FetchResult(uri=store.uri(prefix), local_dir=str(local_dir), num_files=num_files,
                       sent=len(report.sent), skipped=len(report.skipped))
