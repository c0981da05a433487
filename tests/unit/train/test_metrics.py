"""TensorBoard + JSONL sinks, read back with EventAccumulator; media helpers."""

from __future__ import annotations

import json

import numpy as np
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from stream_r1.train.media import heatmap_grid, temporal_profile_image, video_to_uint8
from stream_r1.train.metrics import JsonlSink, MultiSink, TensorBoardSink, effective_sample_size


def test_sinks_write_and_read_back(tmp_path):
    tb = TensorBoardSink(tmp_path / "tb")
    js = JsonlSink(tmp_path / "metrics.jsonl")
    sink = MultiSink(tb, js)
    sink.scalars(1, {"loss/critic": 0.5, "lr/generator": 1e-4})
    sink.scalars(2, {"loss/critic": 0.25})
    sink.histogram(2, "rollout/exit_step", np.array([0, 1, 1, 3]))
    sink.image(2, "w_intra/temporal", temporal_profile_image(torch.tensor([0.5, 1.0, 1.5])))
    pixels = torch.rand(9, 3, 16, 16) * 2 - 1
    sink.image(2, "w_intra/spatial", heatmap_grid(pixels, torch.rand(3, 4, 4)))
    sink.video(2, "rollout/clip", video_to_uint8(pixels), fps=4)
    sink.close()
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "scalars": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    assert [e.value for e in acc.Scalars("loss/critic")] == [0.5, 0.25]
    assert {"w_intra/temporal", "w_intra/spatial", "rollout/clip"} <= set(tags["images"])
    clip = acc.Images("rollout/clip")[0]
    assert clip.encoded_image_string[:6] in (b"GIF89a", b"GIF87a")
    assert acc.Histograms("rollout/exit_step")[0].histogram_value.num == 4
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == [{"step": 1, "loss/critic": 0.5, "lr/generator": 1e-4}, {"step": 2, "loss/critic": 0.25}]


def test_jsonl_resume_truncates(tmp_path):
    s = JsonlSink(tmp_path / "m.jsonl")
    for step in (1, 2, 3):
        s.scalars(step, {"x": float(step)})
    s.close()
    s = JsonlSink(tmp_path / "m.jsonl", resume_step=2)
    s.scalars(3, {"x": 30.0})
    s.close()
    rows = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["x"] for r in rows] == [1.0, 2.0, 30.0]


def test_effective_sample_size():
    assert effective_sample_size([1.0, 1.0, 1.0, 1.0]) == 4.0
    assert abs(effective_sample_size([1.0, 0.0, 0.0]) - 1.0) < 1e-12
    assert effective_sample_size([]) == 0.0
