"""End-to-end tiny training run: TensorBoard review, checkpoints, export, golden loss curve.

Regenerate the golden curve after an intended numerics change with::

    STREAM_R1_REGEN_GOLDEN=1 .venv/bin/python -m pytest -q tests/integration/test_train_tiny.py -k golden
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from stream_r1.config import load_config
from stream_r1.models.loading import load_generator_state_dict, load_wan_transformer
from stream_r1.train.checkpoint import list_checkpoints, load_checkpoint, load_full_tensors, verify_checkpoint
from stream_r1.train.entry import run_training

pytestmark = pytest.mark.slow

GOLDEN = Path(__file__).resolve().parents[1] / "assets" / "losses" / "tiny_cpu.json"
GOLDEN_KEYS = ("loss/critic", "loss/generator", "grad_norm/critic", "grad_norm/generator", "reward/r_final")
# Relative tolerance per key: 10x the largest deviation that `benchmarks/golden_variation.py` measured
# when the same run picks other CPU kernels (ATEN_CPU_CAPABILITY default/avx2/avx512, MKL code paths)
# or 2 threads instead of 1 — what another x86-64 CPU changes (figures in docs/benchmarks.md). fp32 training
# is not bitwise portable across kernels; any change to the method moves these values by far more.
# r_final = r - 0.5 std(deltas) is a small difference of rewards, so its relative spread is the largest.
GOLDEN_REL_TOL = {
    "loss/critic": 2e-7,  # measured 1.5e-8
    "loss/generator": 2e-5,  # measured 1.4e-6
    "grad_norm/critic": 1e-6,  # measured 6.9e-8
    "grad_norm/generator": 3e-5,  # measured 2.5e-6
    "reward/r_final": 2e-3,  # measured 1.3e-4
}


@pytest.fixture(scope="module")
def tiny_run(tiny_checkpoints, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-run")
    cfg = load_config("tiny_cpu", [f"checkpoints.root={tiny_checkpoints}"])
    # CPU reductions depend on the intra-op thread count (and other tests or machines may change it):
    # the golden curve is recorded and checked with exactly one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        history = run_training(cfg, out)
    finally:
        torch.set_num_threads(threads)
    return cfg, out, history


def _jsonl(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "tensorboard" / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_tags_and_values(tiny_run):
    cfg, out, history = tiny_run
    rows = _jsonl(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    scalars = set(tags["scalars"])
    for tag in ("loss/critic", "loss/generator", "generator/dmd_loss", "reward/VQ", "reward/MQ", "reward/TA",
                "reward/r_final", "reward/w_inter", "reward/penalty", "rollout/ess", "grad_norm/critic",
                "grad_norm/generator", "lr/generator", "lr/critic", "time/step_seconds",
                "time/rollouts_per_second", "memory/host_rss_gb"):
        assert tag in scalars, tag
    # the event file holds exactly what the JSONL says (fp32 in TensorBoard)
    tb_critic = [(e.step, e.value) for e in acc.Scalars("loss/critic")]
    assert [s for s, _ in tb_critic] == [1, 2, 3, 4]
    for (_, v), row in zip(tb_critic, rows):
        assert math.isclose(v, row["loss/critic"], rel_tol=1e-6)
    assert [e.step for e in acc.Scalars("loss/generator")] == [1, 3]  # generator windows 0 and 2
    # ESS of W_inter over a window of accum=2 rollouts lies in [1, 2]
    assert all(1.0 - 1e-9 <= e.value <= 2.0 + 1e-9 for e in acc.Scalars("rollout/ess"))
    assert acc.Scalars("lr/generator")[0].value == pytest.approx(cfg.optim.lr_generator)
    # exit-step histogram: generator windows draw 2 (gen) + 2 (critic) exits, others 2
    counts = [h.histogram_value.num for h in acc.Histograms("rollout/exit_step")]
    assert counts == [4, 2, 4, 2]
    assert {"w_intra/temporal_profile", "w_intra/spatial", "rollout/clip"} <= set(tags["images"])
    assert acc.Images("rollout/clip")[0].encoded_image_string[:3] == b"GIF"
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")  # add_hparams
    assert history[-1]["step"] == 4.0


def test_checkpoints_and_export(tiny_run):
    _, out, _ = tiny_run
    ckpts = list_checkpoints(out)
    assert [p.name for p in ckpts] == ["step_000002", "step_000004"]  # checkpoint_every 2, keep_last 2
    manifest = verify_checkpoint(ckpts[-1])
    assert {"dcp/.metadata", "dcp/__0_0.distcp", "trainer_state.json", "rank_00000.pt"} <= set(manifest["files"])
    ck = load_checkpoint(ckpts[-1], rank=0)
    full = load_full_tensors(ckpts[-1])["model"]
    assert ck.state["optimizer_step"] == 4 and ck.state["generator_steps"] == 2
    assert ck.state["ema"]["num_updates"] == 1  # EMA created after raw step 2, updated after the step-3 window
    assert "balancer" in ck.rank_state and "rng" in ck.rank_state
    gen = full["generator"]
    # exports: reference .pt (generator + EMA, model.<original key>) and diffusers directories
    ref = torch.load(out / "final" / "model.pt", weights_only=True)
    assert set(ref) == {"generator", "generator_ema"} and all(k.startswith("model.") for k in ref["generator"])
    sd = load_generator_state_dict(out / "final" / "model.pt", use_ema=False)
    assert all(torch.equal(sd[k], gen[k]) for k in sd)
    ema = load_generator_state_dict(out / "final" / "model.pt", use_ema=True)
    assert all(torch.equal(ema[k], full["generator_ema"][k]) for k in full["generator_ema"])
    exported = load_wan_transformer(out / "final" / "generator", causal=True).state_dict()
    assert all(torch.equal(exported[k], gen[k]) for k in gen)
    assert (out / "final" / "generator_ema" / "config.json").is_file()


def test_golden_loss_curve(tiny_run):
    _, _, history = tiny_run
    curve = [{k: row[k] for k in GOLDEN_KEYS if k in row} | {"step": int(row["step"])} for row in history]
    if os.environ.get("STREAM_R1_REGEN_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps({"preset": "tiny_cpu", "steps": curve}, indent=2, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())["steps"]
    assert [g["step"] for g in golden] == [c["step"] for c in curve]
    for g, c in zip(golden, curve):
        assert set(g) == set(c), (g, c)
        for k in GOLDEN_KEYS:
            if k in g:
                assert math.isclose(c[k], g[k], rel_tol=GOLDEN_REL_TOL[k]), (g["step"], k, c[k], g[k])
