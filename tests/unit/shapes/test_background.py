"""A build stage in its own process: its value comes back, its failure is one line, it never outlives the build."""

from __future__ import annotations

import math
import os
import time

import pytest

from stream_r1.shapes import background
from stream_r1.shapes.background import BackgroundCall, stops_background_calls


def test_the_value_and_the_environment_of_the_call():
    assert BackgroundCall(math.factorial, 20).result() == math.factorial(20)
    assert BackgroundCall(os.getenv, "STAGE_PROBE", env={"STAGE_PROBE": "set in the child"}).result() == "set in the child"
    assert "STAGE_PROBE" not in os.environ  # the parent's environment is untouched


def test_a_failure_comes_back_as_one_line_naming_the_call():
    with pytest.raises(RuntimeError, match=r"^int failed in its own process: ValueError: invalid literal"):
        BackgroundCall(int, "not a number").result()


def test_a_failed_build_stops_the_calls_it_started():
    started: list[BackgroundCall] = []

    @stops_background_calls
    def build() -> None:
        started.append(BackgroundCall(time.sleep, 120))
        raise OSError("a stage failed")

    t0 = time.monotonic()
    with pytest.raises(OSError, match="a stage failed"):
        build()
    assert time.monotonic() - t0 < 60  # not waited out
    assert not started[0]._process.is_alive() and started[0] not in background._RUNNING
