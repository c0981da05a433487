"""Progress when stderr is not a terminal (CI, pods): periodic plain lines, never silence, never bars."""

from __future__ import annotations

import pytest

from stream_r1.utils.progress import progress


def test_periodic_lines_when_not_a_tty(monkeypatch, capsys):
    monkeypatch.delenv("STREAM_R1_PROGRESS", raising=False)
    monkeypatch.setenv("STREAM_R1_PROGRESS_SECONDS", "0")  # a line after every item
    assert list(progress(range(4), desc="train (micro-steps)", total=4)) == [0, 1, 2, 3]
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("train (micro-steps): 1/4 (25%)")
    assert lines[-1].startswith("train (micro-steps): 4/4 (100%)") and lines[-1].endswith("(finished)")
    assert len(lines) == 5 and not any("\r" in ln for ln in lines)


def test_a_long_period_still_reports_the_end(monkeypatch, capsys):
    monkeypatch.delenv("STREAM_R1_PROGRESS", raising=False)
    monkeypatch.setenv("STREAM_R1_PROGRESS_SECONDS", "3600")
    list(progress(iter(range(3)), desc="shards"))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("shards: 3 done") and lines[0].endswith("(finished)")


@pytest.mark.parametrize("setting", [{"STREAM_R1_PROGRESS": "0"}, {}])
def test_silenced_by_env_or_by_the_caller(setting, monkeypatch, capsys):
    monkeypatch.delenv("STREAM_R1_PROGRESS", raising=False)
    for k, v in setting.items():
        monkeypatch.setenv(k, v)
    list(progress(range(3), desc="x", enabled=False if not setting else None))
    assert capsys.readouterr().err == ""
