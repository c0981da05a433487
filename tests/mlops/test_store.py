"""ArtifactStore against a real SeaweedFS: round trip, corruption, resumed upload, bad credentials."""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

import pytest

from stream_r1.ops.seaweed import S3Credentials
from stream_r1.ops.store import ArtifactStore, IntegrityError, StoreAuthError, credentials_from_env
from stream_r1.utils.io import sha256_file

pytestmark = pytest.mark.s3


def _store(creds: S3Credentials, bucket: str, **kw) -> ArtifactStore:
    store = ArtifactStore(creds, bucket, max_attempts=2, backoff_seconds=0.05, **kw)
    store.ensure_bucket()
    return store


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.bin").write_bytes(os.urandom(3000))
    (root / "sub" / "b.json").write_text('{"x": 1}')
    (root / "big.bin").write_bytes(os.urandom(10_000))  # sharded at shard_bytes=4096 -> 3 parts
    return root


def test_dir_round_trip_with_manifest_and_shards(seaweed, bucket_name, tmp_path):
    store = _store(seaweed, bucket_name, shard_bytes=4096)
    src = _tree(tmp_path / "src")
    rep = store.upload_dir(src, "runs/r1/ckpt")
    assert "runs/r1/ckpt/big.bin.parts/part-00002" in rep.sent and len(rep.sent) == 5
    manifest = store.manifest("runs/r1/ckpt")
    assert manifest["big.bin"]["sha256"] == sha256_file(src / "big.bin")
    out = store.download_dir("runs/r1/ckpt", tmp_path / "out")
    for rel in ("a.bin", "sub/b.json", "big.bin"):
        assert (out / rel).read_bytes() == (src / rel).read_bytes()
    # A second upload finds everything in place and sends nothing.
    again = store.upload_dir(src, "runs/r1/ckpt")
    assert again.sent == [] and len(again.skipped) == 5


def test_corrupted_object_detected(seaweed, bucket_name, tmp_path):
    store = _store(seaweed, bucket_name)
    src = _tree(tmp_path / "src")
    store.upload_dir(src, "ckpt")
    # Replace the object's bytes behind the store's back (same size, new content, no metadata).
    evil = os.urandom(3000)
    store.client.put_object(bucket_name, "ckpt/a.bin", io.BytesIO(evil), len(evil))
    with pytest.raises(IntegrityError, match=r"a\.bin is corrupted"):
        store.download_dir("ckpt", tmp_path / "out")
    assert not (tmp_path / "out" / "a.bin").exists()


def test_interrupted_upload_resends_only_missing_parts(seaweed, bucket_name, tmp_path):
    big = tmp_path / "model.bin"
    big.write_bytes(os.urandom(8 * 1024 + 100))  # 9 parts of 1 KiB

    class Interrupted(ArtifactStore):
        """Dies (like a killed pod) after 4 part uploads."""

        calls = 0

        def _put_part(self, key, data, sha):
            if Interrupted.calls >= 4:
                raise ConnectionError("simulated network drop")
            Interrupted.calls += 1
            super()._put_part(key, data, sha)

    store = Interrupted(seaweed, bucket_name, shard_bytes=1024, num_parallel=1, max_attempts=1)
    store.ensure_bucket()
    with pytest.raises(ConnectionError):
        store.upload_file(big, "runs/r/model.bin")
    assert not store.exists("runs/r/model.bin.parts/index.json")  # incomplete uploads have no index

    resumed = _store(seaweed, bucket_name, shard_bytes=1024)
    rep = resumed.upload_file(big, "runs/r/model.bin")
    assert len(rep.skipped) == 4 and len(rep.sent) == 5
    assert rep.bytes_sent == 4 * 1024 + 100
    resumed.download_file("runs/r/model.bin", tmp_path / "back.bin")
    assert sha256_file(tmp_path / "back.bin") == sha256_file(big)


def test_wrong_credentials_clear_error(seaweed, bucket_name):
    bad = dataclasses.replace(seaweed, secret_key="not-the-secret")
    with pytest.raises(StoreAuthError, match="rejected access key"):
        ArtifactStore(bad, bucket_name, max_attempts=1).ensure_bucket()


def test_missing_object_and_env_errors(seaweed, bucket_name, tmp_path):
    store = _store(seaweed, bucket_name)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        store.download_file("nope/x.bin", tmp_path / "x")
    with pytest.raises(ValueError, match="AWS_ACCESS_KEY_ID"):
        credentials_from_env({"STREAM_R1_S3_ENDPOINT": "http://127.0.0.1:1"})
    creds = credentials_from_env(seaweed.env())
    assert creds == seaweed


def test_multipart_parallel_upload_round_trip(seaweed, bucket_name, tmp_path):
    """An 11 MiB file below the shard size goes up as one multipart object (5 MiB parts, 3 in parallel)."""
    store = _store(seaweed, bucket_name, part_size=5 << 20)
    big = tmp_path / "weights.safetensors"
    big.write_bytes(os.urandom(11 << 20))
    rep = store.upload_file(big, "runs/r/weights.safetensors")
    assert rep.sent == ["runs/r/weights.safetensors"] and rep.bytes_sent == 11 << 20
    etag = store.client.stat_object(bucket_name, "runs/r/weights.safetensors").etag
    assert etag.endswith("-3")  # a multipart ETag (md5-of-md5s-N): why we keep our own sha256
    store.download_file("runs/r/weights.safetensors", tmp_path / "back")
    assert sha256_file(tmp_path / "back") == sha256_file(big)
