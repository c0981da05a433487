"""Prompt suites: shipped tiny suite, named suites under a data root, paths and URIs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream_r1.eval.suites import DATA_ROOT_ENV, read_prompt_file, resolve_suite


def test_tiny_suite_matches_test_asset(repo_root: Path) -> None:
    suite = resolve_suite("")
    assert suite.name == "tiny" and len(suite) == 4
    assert list(suite.prompts) == read_prompt_file(repo_root / "tests/assets/prompts/tiny.txt")
    assert len(resolve_suite("tiny", max_prompts=2)) == 2


def test_named_suites_from_a_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "vbench_all_dimension.txt").write_text("a cat\na dog\n")
    (tmp_path / "vbench_all_dimension_extended.txt").write_text("a fluffy cat on a sofa\na dog running\n")
    s = resolve_suite("vbench_extended", data_root=tmp_path)
    assert s.prompts == ("a fluffy cat on a sofa", "a dog running") and s.short_prompts == ("a cat", "a dog")
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    assert resolve_suite("vbench").prompts == ("a cat", "a dog")
    with pytest.raises(FileNotFoundError, match=r"MovieGenVideoBench\.txt"):
        resolve_suite("moviegen")
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="--data-root"):
        resolve_suite("vbench")


def test_paths_json_and_uris(tmp_path: Path) -> None:
    p = tmp_path / "mine.json"
    p.write_text(json.dumps([{"prompt_en": "x", "dimension": ["scene"]}, "y"]))
    assert resolve_suite(str(p)).prompts == ("x", "y")
    assert resolve_suite(f"file://{p}").name == "mine"
    with pytest.raises(ValueError, match="local files only"):
        resolve_suite("s3://bucket/prompts.txt")
    with pytest.raises(FileNotFoundError, match="did you mean the suite 'vbench'"):
        resolve_suite("vbnch")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="no prompts"):
        resolve_suite(str(tmp_path / "empty.txt"))
    with pytest.raises(ValueError, match="max_prompts"):
        resolve_suite("tiny", max_prompts=-1)
