"""S3 artifact store on the ``minio`` SDK: plain objects, a sha256 manifest beside them, verified downloads.

Every file is stored as one plain S3 object under its own key (multipart above ``part_size``, as
``fput_object`` does), so any S3 client reads it: ``aws s3 cp``, boto3, s3fs, KServe's storage
initializer, MLflow. Multipart ETags are not content hashes, so integrity comes
from sha256: each object carries ``x-amz-meta-sha256`` and each uploaded directory has a
``MANIFEST.sha256.json`` (``{"files": {relative path: {"sha256", "size"}}}``) written *last*: its
presence means every file is in place. Downloads are checked against it.

minio-py aborts a failed multipart upload, so the unit of resumption is the file: a re-run of
``upload_dir`` skips every object already present with the right size and sha256.

Failures are classified once (``_retry``): wrong keys and bad bucket names are user errors raised at
once (``StoreAuthError`` / ``ValueError``, one line); connection drops and 5xx are retried a bounded
number of times (urllib3's own retries are switched off so the budget is ours alone).
Nothing read from the store chooses where bytes land outside the destination: every manifest entry
must be a plain relative path (``safe_relative_path``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, TypeVar

import certifi
import urllib3
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
_MISSING_CODES = {"NoSuchKey", "NoSuchObject", "NotFound"}
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
T = TypeVar("T")


class StoreAuthError(ValueError):
    """The S3 endpoint rejected the credentials (a user error: fix the keys)."""


class IntegrityError(ValueError):
    """Downloaded bytes do not match the recorded sha256 (a corrupted or replaced object)."""


@dataclass
class TransferReport:
    """What an upload did (counts are objects, i.e. files)."""

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


def check_bucket_name(bucket: str) -> str:
    """``bucket`` if it is a valid S3 bucket name (3-63 of ``a-z 0-9 . -``, alphanumeric at both ends).

    Raises:
        ValueError: naming the bucket and the rule.
    """
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise ValueError(f"bucket {bucket!r} is not a valid S3 bucket name: use 3-63 lowercase letters, digits, "
                         "'-' or '.', starting and ending with a letter or digit (e.g. stream-r1)")
    return bucket


def safe_relative_path(rel: str, *, what: str) -> PurePosixPath:
    """``rel`` as a relative POSIX path that stays inside any destination directory.

    Args:
        rel: A path read from somewhere untrusted (a manifest entry, a source name).
        what: Where it came from, for the error message.

    Raises:
        ValueError: ``rel`` is empty, absolute, has a drive, a backslash, a NUL, or a ``.``/``..``/empty part.
    """
    parts = rel.split("/")
    bad = (not rel or rel.startswith("/") or "\\" in rel or "\x00" in rel or re.match(r"^[A-Za-z]:", rel)
           or any(p in ("", ".", "..") for p in parts))
    if bad:
        raise ValueError(f"{what} {rel!r} is not a plain relative path (absolute, '..', '.', empty part, drive or "
                         "backslash); refusing to write outside the destination")
    return PurePosixPath(rel)


def inside(root: Path, rel: str, *, what: str) -> Path:
    """``root / rel`` after checking that ``rel`` is safe and no existing symlink leads out of ``root``.

    Raises:
        ValueError: see ``safe_relative_path``; or the resolved path escapes ``root``.
    """
    dst = root / safe_relative_path(rel, what=what)
    real_root = root.resolve()
    if not dst.resolve().is_relative_to(real_root):
        raise ValueError(f"{what} {rel!r} resolves to {dst.resolve()}, outside {real_root} (a symlink on the way); "
                         "refusing to write there")
    return dst


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _HashingReader(io.RawIOBase):
    """A read-only stream that hashes what passes through and refuses to deliver the last byte of a
    stream whose sha256 is not ``expected`` (so a multipart upload fed from it aborts instead of completing)."""

    def __init__(self, raw: BinaryIO, size: int, expected: str, what: str) -> None:
        super().__init__()
        self._raw, self._left, self._expected, self._what = raw, size, expected, what
        self._h = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        data = self._raw.read(self._left if n is None or n < 0 else min(n, self._left))
        self._left -= len(data)
        self._h.update(data)
        if not data and self._left > 0:
            raise IntegrityError(f"{self._what} ended {self._left} bytes early")
        if self._left == 0 and self._h.hexdigest() != self._expected:
            raise IntegrityError(f"{self._what} is corrupted: sha256 {self._h.hexdigest()} != recorded "
                                 f"{self._expected}; re-upload it")
        return data


class ArtifactStore:
    """One bucket on an S3 endpoint, with verified transfers of plain objects.

    Args:
        credentials: Endpoint and keys.
        bucket: Bucket name (checked against the S3 naming rules here, before any request).
        part_size: Multipart part size; files above it go up as multipart objects (S3 minimum 5 MiB).
        num_parallel: Parallel part uploads.
        max_attempts: Attempts per request on transient errors (connection, 5xx); auth errors never retry.
        backoff_seconds: First retry delay; doubles each attempt.
        connect_timeout_seconds: TCP connect timeout per request.
        read_timeout_seconds: Socket read timeout per request.

    Raises:
        ValueError: an invalid bucket name or a part size below 5 MiB.
    """

    def __init__(self, credentials: S3Credentials, bucket: str, *, part_size: int = 64 << 20, num_parallel: int = 3,
                 max_attempts: int = 4, backoff_seconds: float = 0.5, connect_timeout_seconds: float = 10.0,
                 read_timeout_seconds: float = 300.0) -> None:
        if part_size < 5 << 20:
            raise ValueError(f"part_size={part_size} is below the S3 minimum of 5 MiB (5242880)")
        self.credentials = credentials
        self.bucket = check_bucket_name(bucket)
        self.part_size = part_size
        self.num_parallel = num_parallel
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        # retries=False: minio's default pool retries 5x with backoff under ours (minutes on a dead port).
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout_seconds, read=read_timeout_seconds),
            maxsize=max(10, num_parallel + 2), retries=False, cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where())
        self.client = Minio(credentials.endpoint, access_key=credentials.access_key,
                            secret_key=credentials.secret_key, secure=credentials.secure, http_client=http)

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
                        f"({e.code}) during {what}; check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY") from None
                if e.code == "InvalidBucketName":
                    raise ValueError(f"S3 endpoint {self.credentials.url} refused bucket name {self.bucket!r} "
                                     f"(InvalidBucketName) during {what}; pass another bucket name") from None
                if e.code not in _TRANSIENT_CODES or attempt == self.max_attempts:
                    raise
                log.warning("%s failed (%s); retry %d/%d in %.1f s", what, e.code, attempt, self.max_attempts, delay)
            except (Urllib3HTTPError, ConnectionError) as e:
                if attempt == self.max_attempts:
                    raise ConnectionError(f"S3 endpoint {self.credentials.url} unreachable during {what} after "
                                          f"{attempt} attempts: {e}") from None
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

    def stat(self, key: str) -> tuple[int, str] | None:
        """(size, ``x-amz-meta-sha256`` or ``""``) of the object ``key``, or None when it is absent."""
        try:
            st = self._retry(f"stat {key}", lambda: self.client.stat_object(self.bucket, key))
        except S3Error as e:
            if e.code in _MISSING_CODES:
                return None
            raise
        meta = {k.lower(): v for k, v in (st.metadata or {}).items()}
        return int(st.size or 0), meta.get("x-amz-meta-sha256", "")

    def exists(self, key: str) -> bool:
        """Whether the object ``key`` exists."""
        return self.stat(key) is not None

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
            FileNotFoundError: no such object.
            IntegrityError: the bytes do not hash to the expected value.
        """
        def get() -> bytes:
            resp = self.client.get_object(self.bucket, key)
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()
        try:
            data = self._retry(f"get {key}", get)
        except S3Error as e:
            if e.code in _MISSING_CODES:
                raise FileNotFoundError(f"{self.uri(key)} does not exist") from None
            raise
        expected = expected_sha256 or (self.stat(key) or (0, ""))[1]
        if expected and _sha256_bytes(data) != expected:
            raise IntegrityError(f"{self.uri(key)} is corrupted: sha256 {_sha256_bytes(data)} != "
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
    def _put_file(self, path: Path, key: str, sha: str) -> None:
        """One plain object from ``path`` (multipart above ``part_size``): the unit a re-run re-sends."""
        self._retry(f"upload {key}", lambda: self.client.fput_object(
            self.bucket, key, str(path), metadata={"sha256": sha}, part_size=self.part_size,
            num_parallel_uploads=self.num_parallel))

    def upload_file(self, path: str | Path, key: str, sha256: str | None = None) -> TransferReport:
        """Upload one file as the plain object ``key``; skip it when the object already matches.

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
        report = TransferReport()
        if self.stat(key) == (size, sha):
            report.skipped.append(key)
            return report
        self._put_file(path, key, sha)
        report.sent.append(key)
        report.bytes_sent += size
        return report

    def copy_from(self, src: ArtifactStore, src_key: str, key: str, sha256: str, size: int) -> TransferReport:
        """Stream ``src``'s object into ``key`` here (no local disk), verified against ``sha256`` on the way.

        A stream whose bytes do not hash to ``sha256`` fails before the upload completes (nothing is written).
        Skipped when ``key`` already holds (``size``, ``sha256``).
        """
        report = TransferReport()
        if self.stat(key) == (size, sha256):
            report.skipped.append(key)
            return report

        def copy() -> None:
            resp = src.client.get_object(src.bucket, src_key)
            try:
                reader = _HashingReader(resp, size, sha256, src.uri(src_key))
                self.client.put_object(self.bucket, key, reader, size, part_size=self.part_size,
                                       num_parallel_uploads=1, metadata={"sha256": sha256})
            finally:
                resp.close()
                resp.release_conn()
        self._retry(f"copy {src.uri(src_key)} -> {key}", copy)
        report.sent.append(key)
        report.bytes_sent += size
        return report

    def download_file(self, key: str, path: str | Path, expected_sha256: str | None = None) -> Path:
        """Download the object ``key`` to ``path`` atomically, verifying sha256 (given, else its metadata).

        Raises:
            FileNotFoundError: no such object.
            IntegrityError: the bytes do not match the recorded sha256 (nothing is left at ``path``).
        """
        path = Path(path)
        remote = self.stat(key)
        if remote is None:
            raise FileNotFoundError(f"{self.uri(key)} does not exist")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.download")
        self._retry(f"download {key}", lambda: self.client.fget_object(self.bucket, key, str(tmp)))
        expected = expected_sha256 or remote[1]
        got = sha256_file(tmp)
        if expected and got != expected:
            tmp.unlink(missing_ok=True)
            raise IntegrityError(f"{self.uri(key)} is corrupted: sha256 {got} != recorded {expected}; "
                                 "re-upload it (or delete it so the next fetch re-sends it)")
        os.replace(tmp, path)
        return path

    # ---- directories (checkpoints, exports) ----------------------------------------------------
    def upload_dir(self, local_dir: str | Path, prefix: str,
                   files: dict[str, dict[str, Any]] | None = None) -> TransferReport:
        """Upload every file under ``local_dir`` to ``prefix/`` and write ``prefix/MANIFEST.sha256.json`` last.

        Args:
            local_dir: Directory to upload.
            prefix: Destination key prefix.
            files: Its manifest table when already computed (``local_manifest``), else computed here.

        Files already present with the right sha256 are skipped, so re-running after a failure
        re-sends only what is missing.
        """
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise FileNotFoundError(f"cannot upload {local_dir}: not a directory")
        prefix = prefix.rstrip("/")
        files = local_manifest(local_dir) if files is None else files
        report = TransferReport()
        for rel, meta in sorted(files.items()):
            report.merge(self.upload_file(local_dir / rel, f"{prefix}/{rel}", sha256=meta["sha256"]))
        self.put_json(f"{prefix}/{MANIFEST_NAME}", {"files": files})
        log.info("uploaded %s -> %s: %d sent, %d already present", local_dir, self.uri(prefix),
                 len(report.sent), len(report.skipped))
        return report

    def manifest(self, prefix: str) -> dict[str, dict[str, Any]] | None:
        """The checked ``MANIFEST.sha256.json`` file table under ``prefix``, or None when there is none.

        Raises:
            ValueError: an entry is not a plain relative path, or lacks sha256/size.
        """
        key = f"{prefix.rstrip('/')}/{MANIFEST_NAME}"
        if not self.exists(key):
            return None
        files = self.get_json(key).get("files")
        if not isinstance(files, dict):
            raise ValueError(f"{self.uri(key)} has no 'files' table; re-upload the directory")
        for rel, meta in files.items():
            safe_relative_path(rel, what=f"{self.uri(key)} entry")
            if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str) or \
                    not isinstance(meta.get("size"), int):
                raise ValueError(f"{self.uri(key)} entry {rel!r} lacks a sha256/size; re-upload the directory")
        return files

    def download_dir(self, prefix: str, local_dir: str | Path) -> Path:
        """Download the directory under ``prefix`` (per its manifest) into ``local_dir``, verified.

        Local files that already match the manifest are kept. Every entry is checked before any byte is
        written, so a manifest with one bad path writes nothing.

        Raises:
            FileNotFoundError: no manifest under ``prefix``.
            ValueError: a manifest entry would land outside ``local_dir``.
            IntegrityError: a downloaded file does not match the manifest.
        """
        prefix = prefix.rstrip("/")
        files = self.manifest(prefix)
        if files is None:
            raise FileNotFoundError(f"{self.uri(prefix)}/{MANIFEST_NAME} not found; upload the directory with "
                                    "ArtifactStore.upload_dir first")
        local_dir = Path(local_dir)
        local_dir.mkdir(parents=True, exist_ok=True)
        targets = {rel: inside(local_dir, rel, what=f"{self.uri(prefix)}/{MANIFEST_NAME} entry") for rel in files}
        for rel, meta in files.items():
            dst = targets[rel]
            if dst.is_file() and dst.stat().st_size == meta["size"] and sha256_file(dst) == meta["sha256"]:
                continue
            self.download_file(f"{prefix}/{rel}", dst, expected_sha256=meta["sha256"])
        return local_dir

    def remove_stale(self, prefix: str, keep: set[str]) -> list[str]:
        """Delete every object under ``prefix/`` whose relative path is not in ``keep`` (the manifest stays).

        After ``upload_dir`` this makes the prefix mirror the directory, so a rerun under the same key
        does not leave the previous run's files (e.g. TensorBoard event files, named by time) beside it.

        Returns:
            The deleted keys.
        """
        prefix = prefix.rstrip("/")
        stale = [k for k in self.list_keys(prefix + "/")
                 if k[len(prefix) + 1:] not in keep and k[len(prefix) + 1:] != MANIFEST_NAME]
        for key in stale:
            self._retry(f"remove {key}", lambda key=key: self.client.remove_object(self.bucket, key))
        if stale:
            log.info("removed %d stale object(s) under %s", len(stale), self.uri(prefix))
        return stale


def local_manifest(local_dir: str | Path) -> dict[str, dict[str, Any]]:
    """``{relative posix path: {"sha256", "size"}}`` of every file under ``local_dir`` (the manifest itself excluded)."""
    local_dir = Path(local_dir)
    out: dict[str, dict[str, Any]] = {}
    for f in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        rel = f.relative_to(local_dir).as_posix()
        if rel != MANIFEST_NAME:
            out[rel] = {"sha256": sha256_file(f), "size": f.stat().st_size}
    return out
