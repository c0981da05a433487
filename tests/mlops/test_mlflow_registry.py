"""MlflowRegistry on a temp SQLite file: lineage round trip, idempotent re-register, latest()."""

from __future__ import annotations

import pytest

from stream_r1.ops.registry.base import ModelVersionInfo, Registry
from stream_r1.ops.registry.mlflow_registry import MlflowRegistry


def _info(version: str, score: float) -> ModelVersionInfo:
    return ModelVersionInfo(name="stream-r1-student", version=version, uri=f"s3://b/runs/{version}/train/export",
                            run_id=version, config_hash="abc123", data_revision="git:deadbeef",
                            metrics={"reward_overall": score, "temporal_flickering": 0.9}, description="tiny")


def test_register_lineage_idempotent_and_latest(registry_db):
    reg: Registry = MlflowRegistry(registry_db)
    assert reg.latest("stream-r1-student") is None
    assert reg.get("stream-r1-student", "run-a") is None
    a = reg.register(_info("run-a", 0.5))
    assert a == _info("run-a", 0.5)  # every lineage field survives the round trip
    again = reg.register(_info("run-a", 0.7))  # a retried register keeps the original
    assert again.metrics["reward_overall"] == 0.5
    reg.register(_info("run-b", 0.6))
    assert reg.latest("stream-r1-student").version == "run-b"
    # A new client on the same file sees the same registry (it is persistent).
    reopened = MlflowRegistry(f"sqlite:///{registry_db}")
    assert reopened.get("stream-r1-student", "run-a").uri == "s3://b/runs/run-a/train/export"
    assert len(reopened._client.search_model_versions("name = 'stream-r1-student'")) == 2


def test_register_rejects_incomplete_info(registry_db):
    reg = MlflowRegistry(registry_db)
    with pytest.raises(ValueError, match="uri is empty"):
        reg.register(ModelVersionInfo(name="m", version="v", uri=""))
