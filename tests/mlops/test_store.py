"""ArtifactStore against a real SeaweedFS: plain objects other clients read, manifests, corruption, re-runs,
bad credentials, and manifests that try to write outside their destination."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
from pathlib import Path

import pytest

from stream_r1.ops.seaweed import S3Credentials, free_port
from stream_r1.ops.store import (
    MANIFEST_NAME,
    ArtifactStore,
    IntegrityError,
    StoreAuthError,
    credentials_from_env,
    safe_relative_path,
)
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
    (root / "big.bin").write_bytes(os.urandom(10_000))
    return root


def _botocore_client(creds: S3Credentials):
    """A plain S3 client that is not minio (botocore, what boto3 and s3fs are built on)."""
    import botocore.session
    from botocore.config import Config

    return botocore.session.get_session().create_client(
        "s3", endpoint_url=creds.url, aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key,
        region_name="us-east-1", config=Config(s3={"addressing_style": "path"}, request_checksum_calculation=
                                               "when_required", response_checksum_validation="when_required"))


def test_dir_round_trip_plain_objects_and_manifest(seaweed, bucket_name, tmp_path):
    store = _store(seaweed, bucket_name)
    src = _tree(tmp_path / "src")
    rep = store.upload_dir(src, "runs/r1/ckpt")
    assert sorted(rep.sent) == ["runs/r1/ckpt/a.bin", "runs/r1/ckpt/big.bin", "runs/r1/ckpt/sub/b.json"]
    # One object per file plus the manifest: nothing else (no part objects, no index files).
    assert store.list_keys("runs/r1/ckpt/") == sorted([*rep.sent, f"runs/r1/ckpt/{MANIFEST_NAME}"])
    manifest = store.manifest("runs/r1/ckpt")
    assert manifest["big.bin"] == {"sha256": sha256_file(src / "big.bin"), "size": 10_000}
    out = store.download_dir("runs/r1/ckpt", tmp_path / "out")
    for rel in ("a.bin", "sub/b.json", "big.bin"):
        assert (out / rel).read_bytes() == (src / rel).read_bytes()
    again = store.upload_dir(src, "runs/r1/ckpt")
    assert again.sent == [] and len(again.skipped) == 3 and again.bytes_sent == 0


def test_multipart_object_is_read_by_other_clients(seaweed, bucket_name, tmp_path):
    """A file above the multipart threshold is one plain object: HeadObject, botocore and s3fs read it back."""
    import s3fs

    store = _store(seaweed, bucket_name, part_size=5 << 20)
    big = tmp_path / "diffusion_pytorch_model.safetensors"
    big.write_bytes(os.urandom(11 << 20))
    rep = store.upload_file(big, "exports/m/diffusion_pytorch_model.safetensors")
    assert rep.sent == ["exports/m/diffusion_pytorch_model.safetensors"] and rep.bytes_sent == 11 << 20

    s3 = _botocore_client(seaweed)
    head = s3.head_object(Bucket=bucket_name, Key="exports/m/diffusion_pytorch_model.safetensors")
    assert head["ContentLength"] == 11 << 20
    assert head["ETag"].strip('"').endswith("-3")  # multipart (3 parts of <= 5 MiB): why we keep our own sha256
    assert head["Metadata"]["sha256"] == sha256_file(big)
    body = s3.get_object(Bucket=bucket_name, Key="exports/m/diffusion_pytorch_model.safetensors")["Body"].read()
    assert body == big.read_bytes()

    fs = s3fs.S3FileSystem(key=seaweed.access_key, secret=seaweed.secret_key, endpoint_url=seaweed.url)
    fs.get(f"{bucket_name}/exports/m/diffusion_pytorch_model.safetensors", str(tmp_path / "via-s3fs"))
    assert (tmp_path / "via-s3fs").read_bytes() == big.read_bytes()


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


def test_interrupted_upload_resends_only_missing_files(seaweed, bucket_name, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"shard-{i}.safetensors").write_bytes(os.urandom(2000 + i))

    class Interrupted(ArtifactStore):
        """Dies (like a killed pod) after 2 file uploads."""

        calls = 0

        def _put_file(self, path, key, sha):
            if Interrupted.calls >= 2:
                raise ConnectionError("simulated network drop")
            Interrupted.calls += 1
            super()._put_file(path, key, sha)

    store = Interrupted(seaweed, bucket_name, max_attempts=1)
    store.ensure_bucket()
    with pytest.raises(ConnectionError):
        store.upload_dir(src, "sets/x")
    assert store.manifest("sets/x") is None  # the manifest goes last: an incomplete directory has none

    resumed = _store(seaweed, bucket_name)
    rep = resumed.upload_dir(src, "sets/x")
    assert len(rep.skipped) == 2 and len(rep.sent) == 3
    assert rep.bytes_sent == sum(2000 + i for i in range(2, 5))
    out = resumed.download_dir("sets/x", tmp_path / "back")
    assert all((out / p.name).read_bytes() == p.read_bytes() for p in src.iterdir())


def test_copy_between_buckets_streams_and_verifies(seaweed, bucket_name, tmp_path):
    src = _store(seaweed, bucket_name)
    dst = _store(seaweed, bucket_name + "-dst", part_size=5 << 20)
    data = os.urandom(6 << 20)  # two parts at 5 MiB
    sha = src.put_bytes("m/w.bin", data)
    rep = dst.copy_from(src, "m/w.bin", "copy/w.bin", sha, len(data))
    assert rep.sent == ["copy/w.bin"] and dst.get_bytes("copy/w.bin") == data
    assert dst.copy_from(src, "m/w.bin", "copy/w.bin", sha, len(data)).skipped == ["copy/w.bin"]
    # A source whose bytes do not match the recorded sha256: the copy fails and writes nothing.
    with pytest.raises(IntegrityError, match="is corrupted"):
        dst.copy_from(src, "m/w.bin", "copy/bad.bin", "0" * 64, len(data))
    assert not dst.exists("copy/bad.bin")


@pytest.mark.parametrize("entry", ["/tmp/evil.txt", "../evil.txt", "sub/../../evil.txt", "./a", "a//b", "C:/x",
                                   "a\\..\\b"])
def test_manifest_entry_outside_destination_is_refused(seaweed, bucket_name, tmp_path, entry):
    store = _store(seaweed, bucket_name)
    store.put_bytes("evil/payload", b"pwned")
    store.put_json(f"evil/{MANIFEST_NAME}", {"files": {
        "ok.txt": {"sha256": store.put_bytes("evil/ok.txt", b"fine"), "size": 4},
        entry: {"sha256": "0" * 64, "size": 5}}})
    dest = tmp_path / "root" / "dest"
    with pytest.raises(ValueError, match="refusing to write outside the destination") as info:
        store.download_dir("evil", dest)
    assert "\n" not in str(info.value) and repr(entry) in str(info.value)
    # Nothing was written at all (not even ok.txt): the entries are checked before the first download.
    assert list(tmp_path.rglob("*")) == []


def test_symlink_inside_destination_cannot_lead_out(seaweed, bucket_name, tmp_path):
    store = _store(seaweed, bucket_name)
    store.put_json(f"s/{MANIFEST_NAME}", {"files": {"link/x.txt": {"sha256": store.put_bytes("s/link/x.txt", b"x"),
                                                                       "size": 1}}})
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / "link").symlink_to(outside)
    with pytest.raises(ValueError, match="outside"):
        store.download_dir("s", dest)
    assert list(outside.iterdir()) == []


def test_safe_relative_path_accepts_plain_paths():
    assert str(safe_relative_path("teacher/model-00001-of-00006.safetensors", what="x")) == \
        "teacher/model-00001-of-00006.safetensors"
    with pytest.raises(ValueError, match="'' is not a plain relative path"):
        safe_relative_path("", what="source name")


@pytest.mark.parametrize("change", [{"secret_key": "not-the-secret"}, {"access_key": "nobody"}])
def test_wrong_credentials_fail_at_once_with_one_line(seaweed, bucket_name, caplog, change):
    bad = dataclasses.replace(seaweed, **change)
    store = ArtifactStore(bad, bucket_name)  # default retry budget: auth errors must not use it
    with caplog.at_level(logging.WARNING), pytest.raises(StoreAuthError, match="rejected access key") as info:
        store.ensure_bucket()
    assert "\n" not in str(info.value) and info.value.__cause__ is None
    assert not [r for r in caplog.records if "retry" in r.getMessage()]


@pytest.mark.parametrize("name", ["Stream_R1", "ab", "-x-", "a" * 64, "a..b"])
def test_bad_bucket_name_is_refused_before_any_request(name):
    unreachable = S3Credentials(endpoint=f"127.0.0.1:{free_port()}", access_key="a", secret_key="b")
    with pytest.raises(ValueError, match=f"bucket '{name}' is not a valid S3 bucket name"):
        ArtifactStore(unreachable, name)


def test_closed_port_gives_up_after_the_attempt_budget(bucket_name, caplog):
    closed = S3Credentials(endpoint=f"127.0.0.1:{free_port()}", access_key="a", secret_key="b")
    store = ArtifactStore(closed, bucket_name, max_attempts=3, backoff_seconds=0.01)
    with caplog.at_level(logging.WARNING), pytest.raises(ConnectionError, match=r"unreachable .* after 3 attempts"):
        store.ensure_bucket()
    # Our two retries and no hidden ones underneath (urllib3's own retries are off).
    assert len([r for r in caplog.records if "retry" in r.getMessage()]) == 2


def test_missing_object_and_env_errors(seaweed, bucket_name, tmp_path):
    store = _store(seaweed, bucket_name)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        store.download_file("nope/x.bin", tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        store.get_bytes("nope/x.bin")
    with pytest.raises(ValueError, match="AWS_ACCESS_KEY_ID"):
        credentials_from_env({"STREAM_R1_S3_ENDPOINT": "http://127.0.0.1:1"})
    creds = credentials_from_env(seaweed.env())
    assert creds == seaweed
