"""A call in its own process: its value comes back, its failure is one line, it never outlives its ``with`` block."""

from __future__ import annotations

import math
import os
import time

import pytest

from stream_r1.utils.background import BackgroundCall


def test_the_value_and_the_environment_of_the_call():
    assert BackgroundCall(math.factorial, 20).result() == math.factorial(20)
    assert BackgroundCall(os.getenv, "STAGE_PROBE", env={"STAGE_PROBE": "set in the child"}).result() == "set in the child"
    assert "STAGE_PROBE" not in os.environ  # the parent's environment is untouched


def test_a_failure_comes_back_as_one_line_naming_the_call():
    with pytest.raises(RuntimeError, match=r"^int failed in its own process: ValueError: invalid literal"):
        BackgroundCall(int, "not a number").result()


def test_a_failed_block_stops_the_call_it_started():
    started: list[BackgroundCall] = []
    t0 = time.monotonic()
    with pytest.raises(OSError, match="a stage failed"), BackgroundCall(time.sleep, 120) as call:
        started.append(call)
        raise OSError("a stage failed")
    assert time.monotonic() - t0 < 60  # not waited out
    assert not started[0]._process.is_alive()


def test_a_child_that_dies_is_reported_with_its_exit_code():
    with pytest.raises(RuntimeError, match=r"^_exit failed in its own process: its process exited with code 3$"):
        BackgroundCall(os._exit, 3).result()
