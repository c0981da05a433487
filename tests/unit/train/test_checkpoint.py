"""Atomic checkpoints: round trip, manifest verification, keep-last-k, corrupt ones skipped."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import torch

from stream_r1.train.checkpoint import (
    CheckpointPayload,
    capture_rng_state,
    find_resume_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    verify_checkpoint,
)


def _payload(v: float) -> CheckpointPayload:
    return CheckpointPayload(
        models={"generator": {"w": torch.full((2,), v)}, "critic": {"w": torch.zeros(1)}},
        optimizers={"generator": {"state": {}}, "critic": {"state": {}}},
        state={"optimizer_step": int(v)},
        rank_state={"rng": capture_rng_state()},
    )


def test_round_trip_and_keep_last(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, _payload(step), rank=0, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000002", "step_000003"]
    latest = find_resume_checkpoint(tmp_path)
    assert latest is not None and latest.name == "step_000003"
    loaded = load_checkpoint(latest, rank=0)
    assert torch.equal(loaded.models["generator"]["w"], torch.full((2,), 3.0))
    assert loaded.state == {"optimizer_step": 3}
    assert load_checkpoint(latest, rank=1).models == {}


def test_corrupt_checkpoint_skipped_with_warning(tmp_path, caplog):
    save_checkpoint(tmp_path, 1, _payload(1), rank=0, keep_last=3)
    p2 = save_checkpoint(tmp_path, 2, _payload(2), rank=0, keep_last=3)
    with open(p2 / "model.pt", "r+b") as f:
        f.seek(10)
        f.write(b"garbage")
    with pytest.raises(ValueError, match=r"sha256 of model\.pt"):
        verify_checkpoint(p2)
    caplog.set_level(logging.WARNING, logger="stream_r1")
    chosen = find_resume_checkpoint(tmp_path)
    assert chosen is not None and chosen.name == "step_000001"
    assert "step_000002" in caplog.text


def test_crash_mid_write_keeps_previous(tmp_path):
    save_checkpoint(tmp_path, 1, _payload(1), rank=0, keep_last=3)

    def crash():
        raise KeyboardInterrupt  # stands in for SIGKILL (the subprocess test kills for real)

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, _payload(2), rank=0, keep_last=3, on_partial_write=crash)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000001"]
    assert find_resume_checkpoint(tmp_path).name == "step_000001"
    save_checkpoint(tmp_path, 2, _payload(2), rank=0, keep_last=3)  # the stale temp dir is replaced
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_rng_round_trip():
    state = capture_rng_state()
    a = (torch.rand(3), random.random(), np.random.rand())
    restore_rng_state(state)
    b = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
