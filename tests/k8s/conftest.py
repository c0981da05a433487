"""Fixtures of the Kubernetes tests: the CRD schemas vendored in ``tests/k8s/schemas`` and a spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_r1.ops.jobs.base import TrainJobRequest
from stream_r1.ops.k8s.spec import ClusterJobSpec

SCHEMAS = Path(__file__).resolve().parent / "schemas"
TRAIN_IMAGE = "ghcr.io/stream-r1/stream-r1-train:0.1.0"


@pytest.fixture(scope="session")
def schema_dir() -> Path:
    assert (SCHEMAS / "kubeflow.org_pytorchjobs.v1.9.4.yaml").is_file(), f"vendored CRD schemas missing in {SCHEMAS}"
    return SCHEMAS


def make_spec(run_id: str = "8f2c1e0a-KFP_run", num_nodes: int = 1, **kw) -> ClusterJobSpec:
    request = TrainJobRequest(run_id=run_id, config="wan2.1_t2v_1.3b_stream_r1", output_dir=f"/mnt/runs/{run_id}",
                              overrides=("train.num_steps=1000",), num_nodes=num_nodes)
    return ClusterJobSpec.from_request(request, image=TRAIN_IMAGE, **kw)
