"""The CLI's log handler follows ``sys.stderr``: a swapped and closed stream never breaks later log lines."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from stream_r1.utils.logging import configure_logging, get_logger


@pytest.fixture
def restore_logging():
    root = logging.getLogger("stream_r1")
    handlers, level, propagate = list(root.handlers), root.level, root.propagate
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    root.propagate = propagate


def test_log_lines_go_to_the_current_stderr_after_the_old_one_closed(monkeypatch, restore_logging) -> None:
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging("INFO", rank=3)
    get_logger("stream_r1.test").info("one")
    first.close()  # as a test harness closes its capture stream after the test that ran the CLI
    monkeypatch.setattr(sys, "stderr", second)
    get_logger("stream_r1.test").warning("two")
    line = second.getvalue()
    assert line.endswith("WARNING stream_r1.test[rank3]: two\n"), line
