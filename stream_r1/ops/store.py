"""S3 artifact store on the ``minio`` SDK: verified, resumable uploads of checkpoints and run outputs.

Facts designed against: minio-py aborts a failed multipart upload (no resume) and
multipart ETags are not content hashes. So every object carries its own sha256 in metadata
(``x-amz-meta-sha256``), every uploaded directory gets a ``MANIFEST.sha256.json`` (relative path -> sha256,
size), downloads are verified, and files larger than ``shard_bytes`` are stored as separate part
objects so a retried upload re-sends only the parts that are missing or wrong.

Object layout of one file ``KEY``:
- small file: the object ``KEY`` (metadata ``sha256``);
- sharded file: ``KEY.parts/part-00000`` ... (each with metadata ``sha256``) and, written last,
  ``KEY.parts/index.json`` = ``{"sha256", "size", "shard_bytes", "parts": [{"name", "sha256", "size"}]}``.
Bucket layout (docs/pipeline.md): ``runs/<run-id>/<step>/...``, ``checkpoints/<source-id>/...``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from minio import Minio
from minio.error import S3Error
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from stream_r1.ops.seaweed import S3Credentials
from stream_r1.utils.io import sha256_file
from stream_r1.utils.logging import get_logger

log = get_logger(__name__)

MANIFEST_NAME = "MANIFEST.sha256.json"
_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken"}
_TRANSIENT_CODES = {"InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout", "ServerBusy"}
T = TypeVar("T")


class StoreAuthError(ValueError):
    """The S3 endpoint rejected the credentials (a user error: fix the keys)."""


class IntegrityError(ValueError):
    """Downloaded bytes do not match the recorded sha256 (a corrupted or replaced object)."""


@dataclass
class TransferReport:
    """What an upload/download did (counts are objects, i.e. files or file parts)."""

    sent: list[str] = field(default_factory=list)
    """Object keys transferred."""
    skipped: list[str] = field(default_factory=list)
    """Object keys already present with the right size and sha256."""
    bytes_sent: int = 0

    def merge(self, other: TransferReport) -> None:
        """Add ``other``'s counts to this report."""
        self.sent += other.sent
        self.skipped += other.skipped
        self.bytes_sent += other.bytes_sent


def credentials_from_env(env: dict[str, str] | None = None) -> S3Credentials:
    """S3 credentials from ``STREAM_R1_S3_ENDPOINT`` (else ``AWS_ENDPOINT_URL``), ``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY`` (in a cluster: the ``stream-r1-s3`` secret, mapped by the pipeline).

    Raises:
        ValueError: a variable is missing or the endpoint is not an http(s) URL.
    """
    env = dict(os.environ) if env is None else env
    url = env.get("STREAM_R1_S3_ENDPOINT") or env.get("AWS_ENDPOINT_URL") or ""
    missing = [k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not env.get(k)]
    if not url:
        missing.insert(0, "STREAM_R1_S3_ENDPOINT (or AWS_ENDPOINT_URL)")
    if missing:
        raise ValueError(f"S3 store not configured: {', '.join(missing)} unset; export them (endpoint as "
                         "http://host:port) or run `stream-r1 pipeline run-local`, which starts a server")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"S3 endpoint {url!r} must be a URL like http://127.0.0.1:9000")
    return S3Credentials(endpoint=url.split("://", 1)[1].rstrip("/"), access_key=env["AWS_ACCESS_KEY_ID"],
                         secret_key=env["AWS_SECRET_ACCESS_KEY"], secure=url.startswith("https://"))


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArtifactStore:
    """One bucket on an S3 endpoint, with verified and resumable transfers.

    Args:
        credentials: Endpoint and keys.
        bucket: Bucket name.
        shard_bytes: Files larger than this are stored as part objects of this size.
        part_size: Multipart part size for single objects (minio minimum 5 MiB).
        num_parallel: Parallel part uploads/downloads.
        max_attempts: Attempts per object on transient errors (connection, 5xx).
        backoff_seconds: First retry delay; doubles each attempt.
    """

    def __init__(self, credentials: S3Credentials, bucket: str, *, shard_bytes: int = 64 << 20,
                 part_size: int = 16 << 20, num_parallel: int = 3, max_attempts: int = 4,
                 backoff_seconds: float = 0.5) -> None:
        if shard_bytes < 1:
            raise ValueError(f"shard_bytes={shard_bytes} must be positive")
        if part_size < 5 << 20:
            raise ValueError(f"part_size={part_size} is below the S3 minimum of 5 MiB (5242880)")
        self.credentials = credentials
        self.bucket = bucket
        self.shard_bytes = shard_bytes
        self.part_size = part_size
        self.num_parallel = num_parallel
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.client = Minio(credentials.endpoint, access_key=credentials.access_key,
                            secret_key=credentials.secret_key, secure=credentials.secure)

    # ---- plumbing -------------------------------------------------------------------------------
    def uri(self, key: str) -> str:
        """``s3://bucket/key``."""
        return f"s3://{self.bucket}/{key}"

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        delay = self.backoff_seconds
        for attempt in range(1, self.max_attempts + 1):
            try:
                return fn()
            except S3Error as e:
                if e.code in _AUTH_CODES:
                    raise StoreAuthError(
                        f"S3 endpoint {self.credentials.url} rejected access key {self.credentials.access_key!r} "
                        f"({e.code}) during {what}; check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY") from e
                if e.code not in _TRANSIENT_CODES or attempt == self.max_attempts:
                    raise
                log.warning("%s failed (%s); retry %d/%d in %.1f s", what, e.code, attempt, self.max_attempts, delay)
            except (Urllib3HTTPError, ConnectionError) as e:
                if attempt == self.max_attempts:
                    raise ConnectionError(f"S3 endpoint {self.credentials.url} unreachable during {what}: {e}") from e
                log.warning("%s failed (%s); retry %d/%d in %.1f s", what, e, attempt, self.max_attempts, delay)
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (retried: a fresh server may not have volumes yet)."""
        def make() -> None:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
        self._retry(f"creating bucket {self.bucket}", make)

    def _remote_sha(self, key: str) -> tuple[int, str] | None:
        """(size, sha256 metadata) of ``key``, or None when absent."""
        try:
            st = self._retry(f"stat {key}", lambda: self.client.stat_object(self.bucket, key))
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return None
            raise
        meta = {k.lower(): v for k, v in (st.metadata or {}).items()}
        return int(st.size or 0), meta.get("x-amz-meta-sha256", "")

    def exists(self, key: str) -> bool:
        """Whether the object ``key`` exists."""
        return self._remote_sha(key) is not None

    def list_keys(self, prefix: str) -> list[str]:
        """All object keys under ``prefix`` (recursive, sorted)."""
        objs = self._retry(f"list {prefix}", lambda: list(self.client.list_objects(self.bucket, prefix, recursive=True)))
        return sorted(o.object_name for o in objs if o.object_name)

    # ---- bytes and JSON -------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> str:
        """Upload ``data`` to ``key`` with its sha256 in metadata; returns the sha256."""
        sha = _sha256_bytes(data)
        self._retry(f"put {key}", lambda: self.client.put_object(
            self.bucket, key, io.BytesIO(data), len(data), content_type=content_type, metadata={"sha256": sha}))
        return sha

    def get_bytes(self, key: str, expected_sha256: str | None = None) -> bytes:
        """Download ``key`` and verify it against ``expected_sha256`` or its metadata sha256.

        Raises:
            IntegrityError: the bytes do not hash to the expected value.
        """
        def get() -> bytes:
            resp = self.client.get_object(self.bucket, key)
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()
        data = self._retry(f"get {key}", get)
        expected = expected_sha256 or (self._remote_sha(key) or (0, ""))[1]
        if expected and _sha256_bytes(data) != expected:
            raise IntegrityError(f"s3://{self.bucket}/{key} is corrupted: sha256 {_sha256_bytes(data)} != "
                                 f"recorded {expected}; re-upload it (or delete it so the next fetch re-sends it)")
        return data

    def put_json(self, key: str, obj: Any) -> str:
        """Upload ``obj`` as indented JSON; returns its sha256."""
        text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
        return self.put_bytes(key, text.encode(), content_type="application/json")

    def get_json(self, key: str) -> Any:
        """Download and parse a JSON object (verified)."""
        return json.loads(self.get_bytes(key))

    # ---- files ----------------------------------------------------------------------------------
    def upload_file(self, path: str | Path, key: str, sha256: str | None = None) -> TransferReport:
        """Upload one file; skip it when the object (or all its parts) already match.

        Args:
            path: Local file.
            key: Object key.
            sha256: The file's sha256 when already known (saves a hashing pass).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"cannot upload {path}: no such file")
        size = path.stat().st_size
        sha = sha256 or sha256_file(path)
        if size > self.shard_bytes:
            return self._upload_sharded(path, key, size, sha)
        report = TransferReport()
        if self._remote_sha(key) == (size, sha):
            report.skipped.append(key)
            return report
        self._retry(f"upload {key}", lambda: self.client.fput_object(
            self.bucket, key, str(path), metadata={"sha256": sha}, part_size=self.part_size,
            num_parallel_uploads=self.num_parallel))
        report.sent.append(key)
        report.bytes_sent += size
        return report

    def _put_part(self, key: str, data: bytes, sha: str) -> None:
        """Upload one part object (the unit a resumed upload re-sends)."""
        self._retry(f"upload {key}", lambda: self.client.put_object(
            self.bucket, key, io.BytesIO(data), len(data), metadata={"sha256": sha}))

    def _upload_sharded(self, path: Path, key: str, size: int, sha: str) -> TransferReport:
        report = TransferReport()
        num_parts = (size + self.shard_bytes - 1) // self.shard_bytes
        parts: list[dict[str, Any]] = [{} for _ in range(num_parts)]

        def one(i: int) -> None:
            with open(path, "rb") as f:
                f.seek(i * self.shard_bytes)
                data = f.read(self.shard_bytes)
            name = f"{key}.parts/part-{i:05d}"
            psha = _sha256_bytes(data)
            parts[i] = {"name": name, "sha256": psha, "size": len(data)}
            if self._remote_sha(name) == (len(data), psha):
                report.skipped.append(name)
                return
            self._put_part(name, data, psha)
            report.sent.append(name)
            report.bytes_sent += len(data)

        with ThreadPoolExecutor(max_workers=self.num_parallel) as pool:
            list(pool.map(one, range(num_parts)))  # list() re-raises the first part's error
        # The index is written last: its presence means every part is in place.
        self.put_json(f"{key}.parts/index.json",
                      {"sha256": sha, "size": size, "shard_bytes": self.shard_bytes, "parts": parts})
        return report

    def download_file(self, key: str, path: str | Path, expected_sha256: str | None = None) -> Path:
        """Download ``key`` (single or sharded) to ``path`` atomically, verifying sha256.

        Raises:
            FileNotFoundError: neither ``key`` nor ``key.parts/index.json`` exists.
            IntegrityError: a part or the whole file does not match its recorded sha256.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.download")
        remote = self._remote_sha(key)
        if remote is not None:
            self._retry(f"download {key}", lambda: self.client.fget_object(self.bucket, key, str(tmp)))
            expected = expected_sha256 or remote[1]
        elif self.exists(f"{key}.parts/index.json"):
            index = self.get_json(f"{key}.parts/index.json")
            with open(tmp, "wb") as out:
                for part in index["parts"]:
                    out.write(self.get_bytes(part["name"], part["sha256"]))
            expected = expected_sha256 or index["sha256"]
        else:
            raise FileNotFoundError(f"{self.uri(key)} does not exist (neither the object nor {key}.parts/index.json)")
        got = sha256_file(tmp)
        if expected and got != expected:
            tmp.unlink(missing_ok=True)
            raise IntegrityError(f"{self.uri(key)} is corrupted: sha256 {got} != recorded {expected}; "
                                 "re-upload it (or delete it so the next fetch re-sends it)")
        os.replace(tmp, path)
        return path

    # ---- directories (checkpoints) --------------------------------------------------------------
    def upload_dir(self, local_dir: str | Path, prefix: str) -> TransferReport:
        """Upload every file under ``local_dir`` to ``prefix/`` and write ``prefix/MANIFEST.sha256.json``.

        Files already present with the right sha256 are skipped, so re-running after a failure
        re-sends only what is missing.
        """
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise FileNotFoundError(f"cannot upload {local_dir}: not a directory")
        prefix = prefix.rstrip("/")
        manifest: dict[str, dict[str, Any]] = {}
        report = TransferReport()
        for f in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            rel = f.relative_to(local_dir).as_posix()
            if rel == MANIFEST_NAME:
                continue
            sha = sha256_file(f)
            manifest[rel] = {"sha256": sha, "size": f.stat().st_size}
            report.merge(self.upload_file(f, f"{prefix}/{rel}", sha256=sha))
        self.put_json(f"{prefix}/{MANIFEST_NAME}", {"files": manifest})
        log.info("uploaded %s -> %s: %d sent, %d already present", local_dir, self.uri(prefix),
                 len(report.sent), len(report.skipped))
        return report

    def manifest(self, prefix: str) -> dict[str, dict[str, Any]] | None:
        """The ``MANIFEST.sha256.json`` file table under ``prefix``, or None when there is none."""
        key = f"{prefix.rstrip('/')}/{MANIFEST_NAME}"
        return self.get_json(key)["files"] if self.exists(key) else None

    def download_dir(self, prefix: str, local_dir: str | Path) -> Path:
        """Download the directory under ``prefix`` (per its manifest) into ``local_dir``, verified.

        Local files that already match the manifest are kept.

        Raises:
            FileNotFoundError: no manifest under ``prefix``.
            IntegrityError: a downloaded file does not match the manifest.
        """
        prefix = prefix.rstrip("/")
        files = self.manifest(prefix)
        if files is None:
            raise FileNotFoundError(f"{self.uri(prefix)}/{MANIFEST_NAME} not found; upload the directory with "
                                    "ArtifactStore.upload_dir first")
        local_dir = Path(local_dir)
        for rel, meta in files.items():
            dst = local_dir / rel
            if dst.is_file() and dst.stat().st_size == meta["size"] and sha256_file(dst) == meta["sha256"]:
                continue
            self.download_file(f"{prefix}/{rel}", dst, expected_sha256=meta["sha256"])
        return local_dir
