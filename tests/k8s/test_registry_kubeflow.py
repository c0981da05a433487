"""Kubeflow Model Registry backend through the real model-registry client against a FAKE REST server."""

from __future__ import annotations

import pytest

from stream_r1.ops.registry.base import ModelVersionInfo
from stream_r1.ops.registry.kubeflow import KubeflowModelRegistry
from tests.k8s.fakes import FakeModelRegistryServer

INFO = ModelVersionInfo(
    name="stream-r1-student", version="2026.11.22-run-a", uri="s3://stream-r1/runs/run-a/export/",
    run_id="run-a", namespace="team-video", kfp_run_id="0b9a6c2e-5f3d-4c1a-9e7b-2d8f6a4c1e90",
    kfp_run_name="stream-r1-20261122", config_hash="c0ffee12", data_revision="git:abc123",
    metrics={"vbench_quality": 0.8123, "reward_mq": 1.25}, description="reward-weighted DMD, 1000 steps")


@pytest.fixture
def server():
    with FakeModelRegistryServer() as fake:
        yield fake


@pytest.fixture
def registry(server):
    return KubeflowModelRegistry(server.url, server.port, is_secure=False, user_token="test-token")


def test_register_get_roundtrip_with_provenance(registry, server):
    stored = registry.register(INFO)
    assert stored == INFO
    assert registry.get(INFO.name, INFO.version) == INFO
    art = next(iter(server.artifacts.values()))
    assert art["uri"] == INFO.uri and art["modelSourceKind"] == "kfp" and art["modelSourceClass"] == "pipelinerun"
    # the KFP run (id, name, namespace) that produced the version, as the Model Registry UI links it
    assert art["modelSourceId"] == INFO.kfp_run_id and art["modelSourceGroup"] == "team-video"
    assert art["modelSourceName"] == "stream-r1-20261122"
    version = next(iter(server.versions.values()))
    assert version["customProperties"]["config_hash"]["string_value"] == "c0ffee12"
    assert version["customProperties"]["metrics.vbench_quality"]["double_value"] == pytest.approx(0.8123)
    paths = {p for _, p in server.requests}
    assert "/api/model_registry/v1/model_versions" in paths and "/api/model_registry/v1/registered_model" in paths


def test_reregister_is_idempotent(registry, server):
    registry.register(INFO)
    n_versions = len(server.versions)
    again = registry.register(INFO)  # a KFP retry of the register step
    assert again == INFO and len(server.versions) == n_versions == 1 and len(server.artifacts) == 1


def test_already_exists_from_a_concurrent_retry_is_success(registry, server):
    other = KubeflowModelRegistry(server.url, server.port, is_secure=False, user_token="t")
    other.register(INFO)
    assert registry.register(INFO) == INFO
    assert len(server.versions) == 1


def test_same_version_other_uri_is_refused(registry):
    registry.register(INFO)
    with pytest.raises(ValueError, match="immutable"):
        registry.register(ModelVersionInfo(name=INFO.name, version=INFO.version, uri="s3://elsewhere/"))


def test_get_absent_and_latest(registry):
    assert registry.get("nope", "1") is None
    assert registry.latest("nope") is None
    registry.register(INFO)
    assert registry.get(INFO.name, "missing-version") is None
    second = ModelVersionInfo(name=INFO.name, version="2026.11.23-run-b", uri="s3://stream-r1/runs/run-b/export/",
                              run_id="run-b", metrics={"vbench_quality": 0.83})
    registry.register(second)
    assert registry.latest(INFO.name) == second


def test_empty_fields_are_user_errors(registry):
    with pytest.raises(ValueError, match="uri"):
        registry.register(ModelVersionInfo(name="m", version="1", uri=""))


def test_from_uri(server):
    reg = KubeflowModelRegistry.from_uri(f"http://127.0.0.1:{server.port}", user_token="t")
    assert reg.latest("nothing") is None
    with pytest.raises(ValueError, match="http"):
        KubeflowModelRegistry.from_uri("grpc://registry:9090")
