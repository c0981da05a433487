"""Checkpoint sets: the pretrained inputs (teacher, student init, VAE, text encoder, reward model) stored
once in the bucket, addressed by their content, and materialised on a shared volume where steps read them.

A *source spec* is either one URI for a whole checkpoint tree, or comma-separated ``name=URI``
entries that each become the sub-directory ``name`` (one plain directory name):

- a local directory (``/abs/dir``, ``./dir`` or ``file:///abs/dir``), e.g. ``make-tiny-checkpoints`` output;
- an S3 prefix on the same endpoint (``s3://bucket/prefix``) holding a ``MANIFEST.sha256.json``;
- a Hugging Face hub repo (``hf://org/repo[@revision]``) — allowed ONLY here and only inside a
  cluster (``KUBERNETES_SERVICE_HOST`` set), never on the CI machine.

Every entry has a *fingerprint* that names its bytes without moving them: the sha256 of its manifest
table (local directory: hashed here; S3: its ``MANIFEST.sha256.json``) or the hub commit. The set id is
the sha256 of ``{name: fingerprint}``, and the set lives at ``s3://BUCKET/checkpoint-sets/<id>/`` with
its record ``checkpoint-sets/<id>.json`` written last. A second fetch of the same content finds the
record and uploads nothing; runs refer to the set by that URI.

Steps that need the files call ``materialize_set``: one verified download per shared volume (the
runs PVC in a cluster, the work directory locally), reused by every later step and run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream_r1.ops.store import MANIFEST_NAME, ArtifactStore, TransferReport, local_manifest, safe_relative_path
from stream_r1.utils.io import atomic_write_json
from stream_r1.utils.logging import get_logger

log = get_logger(__name__)

SETS_PREFIX = "checkpoint-sets"
_HF_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class FetchResult:
    """What ``fetch_checkpoints`` did."""

    uri: str
    """``s3://bucket/checkpoint-sets/<id>``: the set's tree (one manifest per entry)."""
    set_id: str
    num_files: int
    sent: int
    """Objects uploaded by this call (0 when the set was already stored)."""
    skipped: int
    """Objects already in the store with the right sha256."""
    reused: bool
    """The set's record already existed: nothing was read from the source."""


def parse_source(spec: str) -> dict[str, str]:
    """``"URI"`` -> ``{"": URI}``; ``"a=URI1,b=URI2"`` -> ``{"a": URI1, "b": URI2}``.

    Raises:
        ValueError: empty spec, an empty name or URI, a duplicate name, or a name that is not one plain
            directory name (absolute, ``..``, a separator): it would write outside the set.
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
        safe_relative_path(name, what="checkpoint source name")
        if "/" in name:
            raise ValueError(f"checkpoint source name {name!r} must be one directory name (no '/'); refusing to "
                             "write outside the destination")
        out[name] = uri
    return out


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    return bucket, prefix.rstrip("/")


def _local_path(uri: str) -> Path:
    path = Path(uri[len("file://"):] if uri.startswith("file://") else uri).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint source {uri!r} is not a directory; create one with "
                                "`stream-r1 make-tiny-checkpoints DIR` or pass s3://bucket/prefix")
    return path


def _hf_commit(uri: str) -> tuple[str, str]:
    """``(repo, commit)`` of ``hf://repo[@rev]``; a branch or tag is resolved to its commit (cluster only)."""
    if not os.environ.get("KUBERNETES_SERVICE_HOST"):
        raise ValueError(f"source {uri!r}: Hugging Face hub downloads run only inside the cluster's fetch step; "
                         "locally use a directory from `stream-r1 make-tiny-checkpoints DIR` or an s3:// prefix")
    repo, _, rev = uri[len("hf://"):].partition("@")
    if _HF_COMMIT.match(rev):
        return repo, rev
    from huggingface_hub import HfApi

    return repo, str(HfApi().model_info(repo, revision=rev or None).sha)


class _Entry:
    """One ``name=URI`` entry: its fingerprint (cheap, no transfer) and how to copy it into the set."""

    def __init__(self, uri: str, store: ArtifactStore) -> None:
        self.uri, self.store = uri, store
        self.files: dict[str, dict[str, Any]] | None = None
        if uri.startswith("hf://"):
            self.repo, self.commit = _hf_commit(uri)
            self.fingerprint = f"hf://{self.repo}@{self.commit}"
        elif uri.startswith("s3://"):
            bucket, self.prefix = _split_s3(uri)
            self.src = store if bucket == store.bucket else ArtifactStore(store.credentials, bucket)
            self.files = self.src.manifest(self.prefix)
            if self.files is None:
                raise FileNotFoundError(f"checkpoint source {uri!r} has no {MANIFEST_NAME}; upload it with "
                                        "ArtifactStore.upload_dir (or `stream-r1` fetch from a local directory)")
            self.fingerprint = _digest(self.files)
        else:
            self.path = _local_path(uri)
            self.files = local_manifest(self.path)
            self.fingerprint = _digest(self.files)

    def copy_into(self, prefix: str) -> TransferReport:
        """Put this entry's files under ``prefix/`` in the store (already-present objects skipped)."""
        if self.uri.startswith("hf://"):
            from huggingface_hub import snapshot_download

            with tempfile.TemporaryDirectory(prefix="stream-r1-hf-") as tmp:
                snapshot_download(repo_id=self.repo, revision=self.commit, local_dir=tmp)
                files = {k: v for k, v in local_manifest(tmp).items() if not k.startswith(".cache/")}
                self.files = files
                return self.store.upload_dir(tmp, prefix, files)
        if self.uri.startswith("s3://"):
            assert self.files is not None
            report = TransferReport()
            for rel, meta in sorted(self.files.items()):
                report.merge(self.store.copy_from(self.src, f"{self.prefix}/{rel}", f"{prefix}/{rel}",
                                                  meta["sha256"], meta["size"]))
            self.store.put_json(f"{prefix}/{MANIFEST_NAME}", {"files": self.files})
            return report
        return self.store.upload_dir(self.path, prefix, self.files)


def set_record_key(set_id: str) -> str:
    """``checkpoint-sets/<id>.json``: the record whose presence means the set is complete."""
    return f"{SETS_PREFIX}/{set_id}.json"


def fetch_checkpoints(source: str, store: ArtifactStore) -> FetchResult:
    """Store the checkpoints named by ``source`` once, as the content-addressed set, and return its URI.

    Args:
        source: Source spec (module docstring).
        store: Destination store (bucket created if missing).

    Raises:
        ValueError, FileNotFoundError: a bad spec or a missing source, before anything is uploaded.
    """
    sources = parse_source(source)
    store.ensure_bucket()
    entries = {name: _Entry(uri, store) for name, uri in sources.items()}
    set_id = _digest({name: e.fingerprint for name, e in entries.items()})[:32]
    prefix = f"{SETS_PREFIX}/{set_id}"
    if store.exists(set_record_key(set_id)):
        record = store.get_json(set_record_key(set_id))
        log.info("checkpoint set %s already stored (source %s); nothing uploaded", store.uri(prefix), source)
        return FetchResult(uri=store.uri(prefix), set_id=set_id, num_files=int(record["num_files"]), sent=0,
                           skipped=0, reused=True)
    report = TransferReport()
    for name, entry in entries.items():
        report.merge(entry.copy_into(f"{prefix}/{name}" if name else prefix))
    num_files = sum(len(e.files or {}) for e in entries.values())
    store.put_json(set_record_key(set_id), {
        "set_id": set_id, "source": source, "num_files": num_files,
        "entries": {name: {"uri": e.uri, "fingerprint": e.fingerprint} for name, e in entries.items()}})
    log.info("stored checkpoint set %s from %s (%d files; %d objects sent, %d already present)", store.uri(prefix),
             source, num_files, len(report.sent), len(report.skipped))
    return FetchResult(uri=store.uri(prefix), set_id=set_id, num_files=num_files, sent=len(report.sent),
                       skipped=len(report.skipped), reused=False)


def materialize_set(uri: str, store: ArtifactStore, shared_dir: str | Path) -> Path:
    """The checkpoint set ``uri`` as a verified local tree ``<shared_dir>/checkpoint-sets/<id>/``.

    Downloaded once per shared volume: a marker written after the verified download makes every later
    call (other steps, other runs on the same volume) return at once.

    Raises:
        ValueError: ``uri`` is not ``s3://<store's bucket>/checkpoint-sets/<id>``, or a manifest entry is unsafe.
        FileNotFoundError: the set has no record (never completely stored).
    """
    bucket, prefix = _split_s3(uri) if uri.startswith("s3://") else ("", "")
    set_id = prefix.rpartition("/")[2]
    if bucket != store.bucket or prefix != f"{SETS_PREFIX}/{set_id}" or not re.fullmatch(r"[0-9a-f]{32}", set_id):
        raise ValueError(f"checkpoints uri {uri!r} is not s3://{store.bucket}/{SETS_PREFIX}/<id> (the "
                         "fetch_checkpoints step's output)")
    local = Path(shared_dir) / SETS_PREFIX / set_id
    marker = local.with_name(f"{set_id}.complete.json")
    if marker.is_file():
        return local
    if not store.exists(set_record_key(set_id)):
        raise FileNotFoundError(f"{uri} has no record {store.uri(set_record_key(set_id))}: it was never completely "
                                "stored; run the fetch_checkpoints step again")
    record = store.get_json(set_record_key(set_id))
    for name in record["entries"]:
        if name:
            safe_relative_path(name, what=f"{store.uri(set_record_key(set_id))} entry name")
        store.download_dir(f"{prefix}/{name}" if name else prefix, local / name if name else local)
    atomic_write_json(marker, record)
    log.info("materialised %s at %s", uri, local)
    return local


def key_of(uri: str, store: ArtifactStore) -> str:
    """The key of ``s3://<store's bucket>/KEY``.

    Raises:
        ValueError: another scheme or bucket, or a key that is not a plain relative path.
    """
    bucket, key = _split_s3(uri) if uri.startswith("s3://") else ("", "")
    if bucket != store.bucket or not key:
        raise ValueError(f"{uri!r} is not an object in s3://{store.bucket}/; pass an s3:// URI from an earlier step")
    safe_relative_path(key, what="object key")
    return key


def mirror_path(uri: str, store: ArtifactStore, shared_dir: str | Path) -> Path:
    """Where ``s3://<bucket>/KEY`` lives on the shared volume: ``<shared_dir>/KEY`` (the bucket's layout)."""
    return Path(shared_dir) / key_of(uri, store)


def materialize_dir(uri: str, store: ArtifactStore, shared_dir: str | Path) -> Path:
    """The directory ``uri`` (a prefix with ``MANIFEST.sha256.json``) at ``mirror_path``, verified.

    Files already there with the right sha256 (e.g. written by an earlier step on the same volume) are
    not downloaded again.
    """
    return store.download_dir(key_of(uri, store), mirror_path(uri, store, shared_dir))


def resolve_file(uri: str, store: ArtifactStore, shared_dir: str | Path) -> Path:
    """The object ``uri`` as a verified file at ``mirror_path`` (downloaded only when missing or different).

    Raises:
        FileNotFoundError: no such object.
    """
    from stream_r1.utils.io import sha256_file

    key, dst = key_of(uri, store), mirror_path(uri, store, shared_dir)
    remote = store.stat(key)
    if remote is None:
        raise FileNotFoundError(f"{uri} does not exist")
    if dst.is_file() and dst.stat().st_size == remote[0] and remote[1] and sha256_file(dst) == remote[1]:
        return dst
    return store.download_file(key, dst)
