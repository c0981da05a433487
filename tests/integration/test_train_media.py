"""A tiny run's outputs: clips reuse the reward's decode (one VAE decode per generator micro-step, none for
logging), and the metric keys the DVC plots read are the ones the trainer writes."""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from stream_r1.config import load_config
from stream_r1.method import metric_keys as mk
from stream_r1.models.vae import WanVAE
from stream_r1.train.entry import run_training

pytestmark = pytest.mark.slow


def test_media_windows_decode_nothing_twice(tiny_checkpoints, tmp_path, monkeypatch):
    cfg = load_config("tiny_cpu", [f"checkpoints.root={tiny_checkpoints}"])
    decoded: list[tuple[int, ...]] = []
    real_decode = WanVAE.decode

    def counting_decode(self: WanVAE, latents: torch.Tensor) -> torch.Tensor:  # the real decode, counted
        decoded.append(tuple(latents.shape))
        return real_decode(self, latents)

    monkeypatch.setattr(WanVAE, "decode", counting_decode)
    history = run_training(cfg, tmp_path / "run")
    t = cfg.train
    generator_micro_steps = len(range(0, t.num_optimizer_steps, t.gen_update_every)) * t.grad_accum_steps
    assert len(decoded) == generator_micro_steps  # the reward's decodes only (media windows: 2 of them)
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    clips = acc.Images("rollout/clip")
    assert [c.step for c in clips] == [1, 3]  # generator windows 0 and 2 (media_every_steps=2)
    assert [i.step for i in acc.Images("w_intra/spatial")] == [1, 3]
    # The consumer (ops/dvc.py loss curves) reads keys the producer wrote.
    from stream_r1.ops.dvc import LOSS_KEYS, loss_curves

    rows = [{k for k in row if k != "step"} for row in history]
    assert {mk.LOSS_CRITIC, mk.LOSS_GENERATOR} <= set().union(*rows) and mk.HPARAM_METRICS[0] in rows[0]
    plot = loss_curves(tmp_path / "run" / "tensorboard" / "metrics.jsonl", tmp_path / "curves.json")
    import json

    fields = set().union(*(set(r) for r in json.loads(plot.read_text())))
    assert {"loss_critic", "loss_generator"} <= fields and set(LOSS_KEYS) >= {mk.LOSS_CRITIC, mk.LOSS_GENERATOR}
