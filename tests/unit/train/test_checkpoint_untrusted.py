"""A checkpoint is data: tampered files cannot run code, and a run whose checkpoints all fail
verification is never silently restarted from step 0."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from stream_r1.train.checkpoint import (
    MANIFEST,
    CheckpointPayload,
    capture_rng_state,
    find_resume_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from stream_r1.utils.io import atomic_write_json, sha256_file
from tests.unit.train.untrusted import WritesMarker


def _checkpoint(tmp_path, step: int = 1):
    payload = CheckpointPayload(
        models={"generator": {"w": torch.ones(2)}, "critic": {"w": torch.zeros(1)}},
        optimizers={"generator": {"state": {}}, "critic": {"state": {}}},
        state={"optimizer_step": step},
        rank_state={"rng": capture_rng_state(), "sampler": {"epoch": 0, "position": 3}},
    )
    return save_checkpoint(tmp_path, step, payload, rank=0, keep_last=3)


def _tamper(ckpt, name: str, obj: object) -> None:
    """Replace ``name`` and recompute the manifest, as an attacker with write access would."""
    torch.save(obj, ckpt / name)
    manifest = json.loads((ckpt / MANIFEST).read_text())
    manifest["files"][name] = sha256_file(ckpt / name)
    atomic_write_json(ckpt / MANIFEST, manifest)


def test_rank_state_is_weights_only(tmp_path):
    ckpt = _checkpoint(tmp_path)
    raw = torch.load(ckpt / "rank_00000.pt", weights_only=True)  # raises if anything needs unpickling
    assert raw["sampler"] == {"epoch": 0, "position": 3}
    assert raw["rng"]["python"]["internal"].dtype == torch.int64


@pytest.mark.parametrize("name", ["rank_00000.pt", "model.pt", "optimizers.pt"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, name):
    ckpt = _checkpoint(tmp_path / "run")
    marker = tmp_path / "pwned"
    _tamper(ckpt, name, {"rng": WritesMarker(str(marker))})
    assert find_resume_checkpoint(tmp_path / "run") == ckpt  # integrity passes: the sha was recomputed
    with pytest.raises(ValueError, match=rf"refusing to load .*{name}.*weights-only"):
        load_checkpoint(ckpt, rank=0)
    assert not marker.exists()
    # Control: the same file does run code when fully unpickled, so the refusal above is what stopped it.
    control = f"import torch; torch.load({str(ckpt / name)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", control], check=False, capture_output=True, timeout=120)
    assert marker.exists()


def test_every_checkpoint_corrupt_fails_instead_of_restarting(tmp_path):
    a = _checkpoint(tmp_path, 1)
    b = _checkpoint(tmp_path, 2)
    (a / "trainer_state.json").write_text("{}")
    (b / MANIFEST).unlink()
    with pytest.raises(ValueError, match=r"none of the 2 checkpoints .* verifies .*step_000002.*step_000001.*"
                                         r"refusing to restart from step 0"):
        find_resume_checkpoint(tmp_path)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000001", "step_000002"]  # nothing deleted


def test_no_checkpoints_is_a_fresh_start(tmp_path):
    assert find_resume_checkpoint(tmp_path) is None
