"""`stream-r1 generate` end to end on the tiny checkpoints, and its fail-fast input checks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from stream_r1.cli import main
from stream_r1.config import config_hash, load_config
from stream_r1.config.derived import check_latent_frames
from stream_r1.models.loading import load_generator_state_dict
from stream_r1.sample import streaming_video
from stream_r1.sample.generate import generate
from stream_r1.sample.video_io import count_mp4_frames


@pytest.fixture()
def prompt_file(tmp_path: Path) -> Path:
    p = tmp_path / "prompts.txt"
    p.write_text("A red fox trotting through fresh snow at dawn.\n\n", encoding="utf-8")
    return p


@pytest.mark.slow
def test_generate_cli_end_to_end(tiny_checkpoints: Path, prompt_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    root = f"checkpoints.root={tiny_checkpoints}"
    rc = main(["generate", "--config", "tiny_cpu", "--set", root, "--checkpoint", str(tiny_checkpoints / "ode_init.pt"),
               "--prompts", str(prompt_file), "--num-frames", "6", "--output", str(out), "--seed", "3"])
    assert rc == 0
    frames, fps = count_mp4_frames(out / "video_000.mp4")
    assert (frames, fps) == (1 + 4 * (6 - 1), 16.0)
    gen = json.loads((out / "generation.json").read_text())
    assert gen["config_hash"] == config_hash(load_config("tiny_cpu", [root]))
    assert gen["fps"] > 0 and gen["num_pixel_frames"] == 21 and gen["use_ema"] is False
    (video,) = gen["videos"]
    assert video["path"] == "video_000.mp4" and video["seed"] == 3
    assert len(video["chunk_latency_ms"]) == 2 and all(ms > 0 for ms in video["chunk_latency_ms"])
    assert all(a >= b for a, b in zip(video["chunk_latency_ms"], video["chunk_denoise_ms"], strict=True))
    assert (out / "config.yaml").is_file()
    assert not list(out.glob(".*partial*"))


def test_generate_api_full_cache_with_ema(tiny_checkpoints: Path, tmp_path: Path) -> None:
    sd = load_generator_state_dict(tiny_checkpoints / "ode_init.pt", use_ema=False)
    ckpt = tmp_path / "model.pt"
    torch.save({"generator": sd, "critic": {}, "generator_ema": {k: v * 0.5 for k, v in sd.items()}}, ckpt)
    cfg = load_config("tiny_cpu", [f"checkpoints.root={tiny_checkpoints}", "model.local_attn_frames=-1", "model.sink_frames=0"])
    report = generate(cfg, ckpt, ["a cat", "a dog"], 3, tmp_path / "gen", True, 0)
    assert report.use_ema is True and len(report.videos) == 2
    assert [count_mp4_frames(p)[0] for p in report.videos] == [9, 9]
    assert [r.seed for r in report.results] == [0, 1]
    assert json.loads((tmp_path / "gen" / "generation.json").read_text())["use_ema"] is True


def test_num_frames_message_suggests_valid_values() -> None:
    with pytest.raises(ValueError, match="use 6 or 9"):
        check_latent_frames(7, 3, "--num-frames")
    with pytest.raises(ValueError, match="use 3"):
        check_latent_frames(0, 3, "--num-frames")
    assert check_latent_frames(21, 3, "--num-frames") == 21


def _bad_cases(root: Path, tmp: Path, prompts: Path) -> list[tuple[list[str], str]]:
    junk = tmp / "junk.pt"
    torch.save({"optimizer": {"lr": 1.0}}, junk)
    empty = tmp / "empty.txt"
    empty.write_text("\n \n")
    ode = str(root / "ode_init.pt")
    teacher = tmp / "teacher.pt"
    torch.save({"generator": load_generator_state_dict(ode, use_ema=False) | {"extra.weight": torch.zeros(1)}}, teacher)
    return [
        (["--prompts", str(prompts), "--checkpoint", str(teacher)], "does not fit the base architecture"),
        (["--prompts", str(prompts), "--checkpoint", ode, "--num-frames", "66", "--set", "model.local_attn_frames=-1",
          "--set", "model.sink_frames=0"],
         "exceeds the model's rope_max_seq_len=64"),
        (["--prompts", str(tmp / "missing.txt"), "--checkpoint", ode], "prompt file .* does not exist"),
        (["--prompts", str(prompts), "--checkpoint", ode, "--set", "model.local_attn_frames=-1"],
         r"model.sink_frames=3 needs a local window: with model.local_attn_frames=-1 \(full cache\) set model.sink_frames=0"),
        (["--prompts", str(empty), "--checkpoint", ode], "is empty"),
        (["--prompts", str(prompts), "--checkpoint", ode, "--num-frames", "7"], "use 6 or 9"),
        (["--prompts", str(prompts), "--checkpoint", str(tmp / "nope.pt")], "checkpoint .* does not exist"),
        (["--prompts", str(prompts), "--checkpoint", str(junk)], "Layouts tried"),
        (["--prompts", str(prompts), "--checkpoint", ode, "--use-ema"], "no 'generator_ema'; drop --use-ema"),
        (["--prompts", str(prompts), "--checkpoint", ode, "--set", f"checkpoints.root={tmp}/none"],
         "make-tiny-checkpoints"),
    ]


def test_bad_inputs_fail_before_any_model_loads(
    tiny_checkpoints: Path, prompt_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    def no_model_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded before the inputs were validated")

    monkeypatch.setattr(streaming_video.StudentStreamer, "load", no_model_loading)
    for extra, message in _bad_cases(tiny_checkpoints, tmp_path, prompt_file):
        out = tmp_path / "out"
        frames = [] if "--num-frames" in extra else ["--num-frames", "6"]
        argv = ["generate", "--config", "tiny_cpu", "--set", f"checkpoints.root={tiny_checkpoints}",
                "--output", str(out), *frames, *extra]
        assert main(argv) == 2, extra
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "stream-r1 generate: error:" in err
        assert re.search(message, err), (message, err)
        assert not out.exists()


def test_eval_use_ema_warns_only_when_a_file_lacks_the_ema(tiny_checkpoints: Path, tmp_path: Path) -> None:
    # The pipeline evaluates an export's generator_ema/ directory with eval.use_ema=true: that directory *is*
    # the EMA, so a "has no generator_ema" warning there was false. A .pt without EMA still warns.
    import logging

    from stream_r1.sample.generate import plan_generation

    records: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("stream_r1.sample.generate")
    logger.addHandler(handler)
    try:
        cfg = load_config("tiny_cpu", [f"checkpoints.root={tiny_checkpoints}"])
        plan = plan_generation(cfg, tiny_checkpoints / "base", ["a fox"], 6, tmp_path / "o", use_ema=True)
        assert not plan.use_ema and not records
        plan = plan_generation(cfg, tiny_checkpoints / "ode_init.pt", ["a fox"], 6, tmp_path / "o", use_ema=True)
        assert not plan.use_ema and "has no generator_ema" in records[0].getMessage()
    finally:
        logger.removeHandler(handler)
