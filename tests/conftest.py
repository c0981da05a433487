"""Shared pytest setup: markers, GPU skip, deterministic CPU threads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("STREAM_R1_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs CUDA (run on the lent GPU device)")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint set of `stream-r1 make-tiny-checkpoints` (docs/design.md), written once per session.

    Use it with the tiny_cpu preset: ``load_config("tiny_cpu", [f"checkpoints.root={tiny_checkpoints}"])``.
    """
    from stream_r1.commands.make_tiny_checkpoints import write_tiny_checkpoints

    root = tmp_path_factory.mktemp("tiny-checkpoints")
    return write_tiny_checkpoints(root, with_reward=True)


@pytest.fixture(scope="session")
def shapes_world_ci(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``ci`` shapes world (``stream-r1 shapes build DIR --size ci``, seed 0), built once per session.

    About 3-5 minutes of CPU (docs/benchmarks.md "Shapes world"); tests that use it are marked slow and get a
    longer timeout.
    """
    import torch

    from stream_r1.shapes.build import build_world

    torch.set_num_threads(2)
    return build_world(tmp_path_factory.mktemp("shapes") / "world", "ci", seed=0)
