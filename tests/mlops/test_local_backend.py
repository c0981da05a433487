"""The ``local`` job backend: a real ``torchrun --standalone`` subprocess, output streamed, outcome reported."""

from __future__ import annotations

import sys

import pytest

from stream_r1.ops.jobs.base import JobBackend, TrainJobRequest
from stream_r1.ops.jobs.local import LocalJobBackend


def test_command_is_torchrun_of_stream_r1_train(tmp_path):
    req = TrainJobRequest(run_id="r1", config="tiny_cpu", output_dir=str(tmp_path), overrides=("train.seed=3",),
                          nproc_per_node=2)
    cmd = LocalJobBackend().command(req)
    assert cmd[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert cmd[5:] == ["-m", "stream_r1", "train", "--config", "tiny_cpu", "--output", str(tmp_path),
                       "--resume", "auto", "--set", "train.seed=3"]
    with pytest.raises(ValueError, match="num_nodes=2"):
        LocalJobBackend().command(TrainJobRequest(run_id="r", config="c", output_dir="o", num_nodes=2))


@pytest.mark.slow
def test_failed_job_reports_failure_with_streamed_tail(tmp_path):
    lines: list[str] = []
    backend: JobBackend = LocalJobBackend(line_sink=lines.append)
    # A config that does not exist: the real trainer CLI (or the CLI parser) fails fast with a clear error.
    req = TrainJobRequest(run_id="r1", config="no_such_preset", output_dir=str(tmp_path / "run"))
    result = backend.run(req)
    assert result.state == "Failed"
    assert "exited with code" in result.message
    assert lines, "the job's output is streamed line by line"
    assert (tmp_path / "run" / "train_job.log").read_text().strip()
    backend.cancel("r1")  # nothing running: a no-op


class _SleepyBackend(LocalJobBackend):
    """Only the command differs: a sleeping child stands in for a hung trainer (process handling is real)."""

    def command(self, request):
        return [sys.executable, "-c", "import time; time.sleep(30)"]


def test_deadline_kills_the_job(tmp_path):
    backend = _SleepyBackend(timeout_seconds=0.5, line_sink=lambda _l: None)
    result = backend.run(TrainJobRequest(run_id="r2", config="tiny_cpu", output_dir=str(tmp_path / "run")))
    assert result.state == "DeadlineExceeded"
