"""The shapes build's inputs: command-line errors, sizes, packaged prompt files, the preset and the clip mixture."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from stream_r1.cli import main
from stream_r1.config import load_config
from stream_r1.shapes.data import held_out_clips, teacher_clips
from stream_r1.shapes.sizes import SIZES
from stream_r1.shapes.world import HELD_OUT_SEED_BASE, split_prompts
from stream_r1.utils.io import package_path


def test_unknown_size_is_one_clear_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shapes", "build", str(tmp_path / "w"), "--size", "huge"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--size 'huge'" in err[0] and "ci" in err[0]
    assert not (tmp_path / "w").exists()


def test_packaged_prompt_files_are_the_split() -> None:
    train, held = split_prompts()
    cfg = load_config("shapes_cpu")
    # The preset names them inside the package (``package:stream_r1/...``), independent of the working directory.
    assert package_path(cfg.data.prompts).read_text(encoding="utf-8").splitlines() == train
    assert package_path(cfg.eval.prompts).read_text(encoding="utf-8").splitlines() == held


def test_preset_geometry_matches_the_default_world() -> None:
    cfg = load_config("shapes_cpu")
    ws = SIZES["default"]
    assert cfg.rollout.num_frames == cfg.eval.num_frames == ws.latent_frames
    assert cfg.rollout.latent_height == cfg.rollout.latent_width == ws.latent_side


def test_teacher_mixture_has_the_stated_degraded_fraction_under_every_prompt() -> None:
    clips = teacher_clips(10, 0.4, 0)
    train, _ = split_prompts()
    per_prompt = Counter((c.prompt, c.mode != "clean") for c in clips)
    for p in train:
        assert per_prompt[(p, True)] == 4 and per_prompt[(p, False)] == 6
    assert {c.mode for c in clips} == {"clean", "blur", "jitter", "drift"}
    assert all(c.seed < HELD_OUT_SEED_BASE for c in clips)
    assert all(c.seed >= HELD_OUT_SEED_BASE and c.mode == "clean" for c in held_out_clips(2))
    assert clips == teacher_clips(10, 0.4, 0)
