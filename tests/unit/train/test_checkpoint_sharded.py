"""Sharded (DCP) checkpoints in one process: asynchronous, atomic, manifested, and data only."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from stream_r1.distributed import dcp_io
from stream_r1.distributed.dcp_io import METADATA, read_metadata_safely
from stream_r1.distributed.state_dicts import sharded_optimizer_state_dict
from stream_r1.train.checkpoint import (
    MANIFEST,
    CheckpointPayload,
    CheckpointWriter,
    capture_rng_state,
    find_resume_checkpoint,
    is_sharded,
    list_checkpoints,
    load_checkpoint,
    load_full_tensors,
    load_sharded,
    verify_checkpoint,
)
from stream_r1.utils.io import atomic_write_json, sha256_file
from tests.unit.train.untrusted import WritesMarker


def _trained():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    net(torch.randn(4, 3)).pow(2).sum().backward()
    opt.step()
    return net, opt


def _payload(net, opt, step):
    optim = sharded_optimizer_state_dict(net, opt)  # FQN-keyed, as the trainer stores it
    return CheckpointPayload(sharded={"model": {"net": net.state_dict()}, "optim": {"net": optim}},
                             state={"optimizer_step": step}, rank_state={"rng": capture_rng_state()})


def _rehash(ckpt, name):
    manifest = json.loads((ckpt / MANIFEST).read_text())
    manifest["files"][name] = sha256_file(ckpt / name)
    atomic_write_json(ckpt / MANIFEST, manifest)


def test_async_save_publishes_atomically_and_round_trips(tmp_path):
    net, opt = _trained()
    writer = CheckpointWriter(tmp_path, rank=0, keep_last=2)
    for step in (1, 2, 3):
        writer.save(step, _payload(net, opt, step))
        expected = {k: v.clone() for k, v in net.state_dict().items()}
        with torch.no_grad():  # training goes on while the save runs: the staged copy is what is written
            net.weight.add_(1.0)
        published = writer.wait()
        assert published.name == f"step_{step:06d}"
        assert torch.equal(load_full_tensors(published)["model"]["net"]["weight"], expected["weight"])
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000002", "step_000003"]
    latest = find_resume_checkpoint(tmp_path)
    assert is_sharded(latest) and {"dcp/.metadata", "dcp/__0_0.distcp", "dcp/__0.sha256.json"} <= set(
        verify_checkpoint(latest)["files"])
    fresh = torch.nn.Linear(3, 2)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    template = {"model": {"net": fresh.state_dict()}, "optim": {"net": sharded_optimizer_state_dict(fresh, fresh_opt)}}
    load_sharded(latest, template)
    assert torch.equal(template["model"]["net"]["weight"], expected["weight"])
    assert load_checkpoint(latest, rank=0).state == {"optimizer_step": 3}


def test_crash_before_publish_keeps_previous(tmp_path):
    net, opt = _trained()
    writer = CheckpointWriter(tmp_path, rank=0, keep_last=3)
    writer.save(1, _payload(net, opt, 1))
    writer.wait()

    def crash():
        raise KeyboardInterrupt  # stands in for SIGKILL (the subprocess tests kill for real)

    writer.save(2, _payload(net, opt, 2), on_partial_write=crash)
    with pytest.raises(CheckpointException, match="KeyboardInterrupt"):  # DCP wraps the saving thread's failure
        writer.wait()
    assert (tmp_path / "checkpoints" / ".tmp-step_000002" / "dcp" / "__0_0.distcp").is_file()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000001"]
    writer.save(2, _payload(net, opt, 2))  # the stale temp dir is replaced
    writer.wait()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000001", "step_000002"]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_shard_corruption_is_caught_by_the_manifest(tmp_path):
    net, opt = _trained()
    writer = CheckpointWriter(tmp_path, rank=0, keep_last=3)
    writer.save(1, _payload(net, opt, 1))
    ckpt = writer.wait()
    with open(ckpt / "dcp" / "__0_0.distcp", "r+b") as f:
        f.seek(100)
        f.write(b"garbage")
    with pytest.raises(ValueError, match=r"sha256 of dcp/__0_0\.distcp"):
        verify_checkpoint(ckpt)


def test_malicious_dcp_metadata_is_refused_and_never_runs(tmp_path):
    net, opt = _trained()
    writer = CheckpointWriter(tmp_path / "run", rank=0, keep_last=3)
    writer.save(1, _payload(net, opt, 1))
    ckpt = writer.wait()
    marker = tmp_path / "pwned"
    (ckpt / "dcp" / METADATA).write_bytes(pickle.dumps(WritesMarker(str(marker))))
    _rehash(ckpt, f"dcp/{METADATA}")
    verify_checkpoint(ckpt)  # integrity passes: the sha was recomputed
    template = {"model": {"net": torch.nn.Linear(3, 2).state_dict()}}
    with pytest.raises(ValueError, match=r"refusing to load .*\.metadata.*open is not a DCP metadata type"):
        load_sharded(ckpt, template)
    with pytest.raises(ValueError, match="refusing to load"):
        load_full_tensors(ckpt)
    assert not marker.exists()


def test_malicious_value_inside_a_shard_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    dcp.save({"model": {"w": torch.ones(2)}, "evil": WritesMarker(str(marker))}, checkpoint_id=tmp_path / "dcp")
    template = {"model": {"w": torch.zeros(2)}, "evil": None}
    with pytest.raises(ValueError, match=r"refusing to load checkpoint value 'evil'.*weights-only"):
        dcp_io.load(template, tmp_path / "dcp", process_group=None)
    assert not marker.exists()


def test_shard_names_outside_the_checkpoint_are_refused(tmp_path):
    net, opt = _trained()
    writer = CheckpointWriter(tmp_path, rank=0, keep_last=3)
    writer.save(1, _payload(net, opt, 1))
    ckpt = writer.wait()
    md = read_metadata_safely(ckpt / "dcp" / METADATA)
    for info in md.storage_data.values():
        info.relative_path = "../../../../etc/passwd"
    (ckpt / "dcp" / METADATA).write_bytes(pickle.dumps(md))
    with pytest.raises(ValueError, match=r"shard name '\.\./\.\./.*' is not __<rank>_<i>\.distcp"):
        load_full_tensors(ckpt)
