"""MLOps test fixtures: one real SeaweedFS S3 server per session (marker ``s3``)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stream_r1.ops.seaweed import S3Credentials, SeaweedServer


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Credentials]:
    """A loopback SeaweedFS with generated keys in a fresh data dir; stopped (SIGTERM→SIGKILL) at the end."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"))
    creds = server.start()
    try:
        yield creds
    finally:
        server.stop()


@pytest.fixture
def bucket_name() -> str:
    """A fresh bucket name per test (buckets are cheap; tests never share objects)."""
    return "t-" + secrets.token_hex(4)


@pytest.fixture(scope="session")
def repo_root_path() -> Path:
    return Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make-tiny-checkpoints`` output (the local run's fetch source), written once per session."""
    from stream_r1.commands.make_tiny_checkpoints import write_tiny_checkpoints

    return write_tiny_checkpoints(tmp_path_factory.mktemp("tiny") / "ckpts")


@pytest.fixture
def s3_env(seaweed: S3Credentials, monkeypatch: pytest.MonkeyPatch) -> S3Credentials:
    """Export the server's endpoint and keys (steps and kfp.local task subprocesses read them from env)."""
    for k, v in seaweed.env().items():
        monkeypatch.setenv(k, v)
    return seaweed


@pytest.fixture
def kfp_local(tmp_path: Path) -> Path:
    """``kfp.local`` with the in-venv SubprocessRunner and a fresh workspace (kfp.local rmtree's it)."""
    from kfp import local

    ws = tmp_path / "workspace"
    ws.mkdir()
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "pipeline_root"),
               workspace_root=str(ws), raise_on_error=True)
    return tmp_path / "pipeline_root"


@pytest.fixture(scope="session", autouse=True)
def _repo_on_path() -> None:
    """``components``/``pipelines`` are top-level folders of the checkout, not installed packages."""
    import sys

    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.insert(0, root)


@pytest.fixture(scope="session")
def _registry_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow SQLite registry (migrations are the slow part: do them once)."""
    from stream_r1.ops.registry.mlflow_registry import MlflowRegistry

    path = tmp_path_factory.mktemp("registry") / "template.db"
    MlflowRegistry(path).latest("warm-up")
    return path


@pytest.fixture
def registry_db(_registry_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the migrated empty registry for one test."""
    import shutil

    dst = tmp_path / "registry.db"
    shutil.copyfile(_registry_template, dst)
    return dst


def _plain_s3_download(creds: S3Credentials, uri: str, dest: Path) -> tuple[Any, str, str, list[str]]:
    """Every object under ``uri`` through botocore (what boto3, s3fs and KServe's initializer use), no project code.

    Returns:
        ``(client, bucket, prefix, keys)``.
    """
    import botocore.session
    from botocore.config import Config

    bucket, _, prefix = uri[len("s3://"):].partition("/")
    s3 = botocore.session.get_session().create_client(
        "s3", endpoint_url=creds.url, aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key,
        region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"]]
    for key in keys:
        target = dest / key[len(prefix) + 1:]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    return s3, bucket, prefix, keys


@pytest.fixture
def plain_s3_download() -> Callable[[S3Credentials, str, Path], tuple[Any, str, str, list[str]]]:
    """``_plain_s3_download``: read a registered URI the way a consumer outside the project would."""
    return _plain_s3_download
