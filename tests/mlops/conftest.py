"""MLOps test fixtures: one real SeaweedFS S3 server per session (marker ``s3``)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

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
