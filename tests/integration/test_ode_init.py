"""ode-pairs (sharded, resumable) -> ode-init -> an ode_init.pt the loaders read (docs/method.md §1.9)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from stream_r1.config import load_config
from stream_r1.models.loading import load_generator_state_dict, load_student
from stream_r1.train.ode_entry import run_ode_init, run_ode_pairs
from stream_r1.train.ode_pairs import OdePairs

pytestmark = pytest.mark.slow


def test_pairs_resume_and_regression(tiny_checkpoints, tmp_path):
    cfg = load_config("tiny_cpu", [f"checkpoints.root={tiny_checkpoints}"])
    pairs_dir = tmp_path / "pairs"
    index = run_ode_pairs(cfg, pairs_dir)
    meta = json.loads(index.read_text())
    assert len(meta["prompts"]) == 4 and [s["count"] for s in meta["shards"]] == [2, 2]
    assert meta["latent_shape"] == [5, 6, 16, 4, 4] and meta["timesteps"][-1] == 0.0
    assert load_config(pairs_dir / "config.yaml") == cfg  # resolved config next to the output
    first = load_file(pairs_dir / "shard_00001.safetensors")["latents"]
    # resumable: a torn shard (no sidecar) is regenerated with identical bytes; complete ones are kept
    (pairs_dir / "shard_00001.json").unlink()
    mtime0 = (pairs_dir / "shard_00000.safetensors").stat().st_mtime_ns
    run_ode_pairs(cfg, pairs_dir)
    assert (pairs_dir / "shard_00000.safetensors").stat().st_mtime_ns == mtime0
    assert torch.equal(load_file(pairs_dir / "shard_00001.safetensors")["latents"], first)
    pairs = OdePairs(pairs_dir)
    prompt, states = pairs[3]
    assert prompt == meta["prompts"][3] and states.shape == (5, 6, 16, 4, 4)

    out = tmp_path / "ode"
    losses = run_ode_init(cfg, pairs_dir, out)
    # ops/dvc.py plots loss/ode_regression: the ODE run writes exactly that key (one row per step).
    from stream_r1.method.metric_keys import LOSS_ODE_REGRESSION
    from stream_r1.ops.dvc import LOSS_KEYS

    rows = [json.loads(x) for x in (out / "tensorboard" / "metrics.jsonl").read_text().splitlines()]
    assert LOSS_ODE_REGRESSION in LOSS_KEYS and [r[LOSS_ODE_REGRESSION] for r in rows] == pytest.approx(losses)
    assert load_config(out / "config.yaml") == cfg
    assert len(losses) == cfg.ode.num_steps and all(torch.isfinite(torch.tensor(losses)))
    ref = torch.load(out / "ode_init.pt", weights_only=True)
    assert set(ref) == {"generator"} and all(k.startswith("model.") for k in ref["generator"])
    student = load_student(tiny_checkpoints / "base", out / "ode_init.pt", use_ema=False)
    base = load_student(tiny_checkpoints / "base", None, use_ema=False)
    sd = load_generator_state_dict(out / "ode_init.pt", use_ema=False)
    assert all(torch.equal(student.state_dict()[k], v) for k, v in sd.items())
    assert any(not torch.equal(base.state_dict()[k], v) for k, v in sd.items())  # it trained

    # The training loop's checkpoints (every 2 steps and at the end); an interruption after the step-2
    # checkpoint (only that one copied) resumes and replays steps 3-4 bitwise.
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000002", "step_000004"]
    other = tmp_path / "ode-resumed"
    shutil.copytree(out / "checkpoints" / "step_000002", other / "checkpoints" / "step_000002")
    with pytest.raises(ValueError, match="--resume auto"):
        run_ode_init(cfg, pairs_dir, other)
    tail = run_ode_init(cfg, pairs_dir, other, resume="auto")
    assert tail == losses[2:]
    again = torch.load(other / "ode_init.pt", weights_only=True)["generator"]
    assert all(torch.equal(again[k], v) for k, v in ref["generator"].items())
