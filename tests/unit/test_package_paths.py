"""Config paths written ``package:stream_r1/...`` resolve inside the installed package, from any directory
(a pipeline step runs in an image whose working directory holds no checkout)."""

from pathlib import Path

import pytest

from stream_r1.config import load_config
from stream_r1.utils.io import package_path, read_prompt_file


def test_tiny_preset_prompts_resolve_outside_the_checkout(tmp_path, monkeypatch):
    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(tmp_path)
    cfg = load_config("tiny_cpu")
    assert cfg.data.prompts.startswith("package:stream_r1/")
    assert read_prompt_file(cfg.data.prompts) == read_prompt_file(repo / "tests/assets/prompts/tiny.txt")


def test_other_paths_are_left_alone(tmp_path):
    assert package_path(tmp_path / "p.txt") == tmp_path / "p.txt"
    with pytest.raises(FileNotFoundError, match=r"data\.prompts"):
        read_prompt_file("package:stream_r1/assets/prompts/missing.txt", setting="data.prompts")
