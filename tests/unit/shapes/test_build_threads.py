"""The build's main stages run on one thread fewer than the CPUs, and the caller's thread count comes back."""

from __future__ import annotations

import pytest
import torch

from stream_r1.shapes import build


def test_threads_are_set_inside_and_restored_after_even_on_failure() -> None:
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="a stage failed"), build._torch_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("a stage failed")
    assert torch.get_num_threads() == before


def test_the_usable_cpus_are_this_process_affinity() -> None:
    import os

    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert build._usable_cpus() == expected >= 1
