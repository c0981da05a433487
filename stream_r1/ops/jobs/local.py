"""The ``local`` job backend: ``torchrun --standalone`` of ``stream_r1 train`` on this machine.

The same command a PyTorchJob/TrainJob runs in a cluster, on CPU/gloo here.
Output is streamed line by line into the caller's log (the KFP step log) and into
``<output_dir>/train_job.log``.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from stream_r1.ops.jobs.base import JobResult, TrainJobRequest
from stream_r1.utils.logging import get_logger

log = get_logger(__name__)


class LocalJobBackend:
    """Runs a ``TrainJobRequest`` as a local ``torchrun --standalone --nproc_per_node N`` subprocess.

    Args:
        python: Interpreter to launch ``torch.distributed.run`` with (default: the running one, i.e. the venv).
        timeout_seconds: Overall deadline; the job is killed and reported ``DeadlineExceeded`` after it.
        line_sink: Where each output line goes (default: this module's logger at INFO).
    """

    name = "local"

    def __init__(self, python: str | None = None, *, timeout_seconds: float | None = None,
                 line_sink: Callable[[str], None] | None = None) -> None:
        if python is None and importlib.util.find_spec("torch") is None:
            # The launcher's image (ops) has no torch: training belongs in the train image.
            raise ValueError("backend=local trains inside this step's own process, which has no torch here (the ops "
                             "image); use backend=container (run-local --runner docker), pytorchjob or trainjob")
        self.python = python or sys.executable
        self.timeout_seconds = timeout_seconds
        self.line_sink = line_sink or (lambda line: log.info("[train] %s", line))
        self._procs: dict[str, subprocess.Popen[str]] = {}
        self._lock = threading.Lock()

    def command(self, request: TrainJobRequest) -> list[str]:
        """The full command line for ``request``.

        Raises:
            ValueError: ``num_nodes`` is not 1 or ``nproc_per_node`` < 1 (a local job is single-node).
        """
        if request.num_nodes != 1:
            raise ValueError(f"the local backend runs one node, got num_nodes={request.num_nodes}; "
                             "use backend=pytorchjob or trainjob for multi-node training")
        if request.nproc_per_node < 1:
            raise ValueError(f"nproc_per_node={request.nproc_per_node} must be >= 1")
        return [self.python, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={request.nproc_per_node}", "-m", "stream_r1", *request.train_args()]

    def run(self, request: TrainJobRequest) -> JobResult:
        """Run the job to completion, streaming its output; never raises for a failed job."""
        cmd = self.command(request)
        out_dir = Path(request.output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
               **request.env}
        log.info("local job %s: %s", request.run_id, " ".join(cmd))
        tail: list[str] = []
        with open(out_dir / "train_job.log", "a", encoding="utf-8") as logf:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                    env=env, start_new_session=True)
            with self._lock:
                self._procs[request.run_id] = proc
            timer = threading.Timer(self.timeout_seconds, self._kill, (proc,)) if self.timeout_seconds else None
            if timer:
                timer.start()
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    line = line.rstrip("\n")
                    logf.write(line + "\n")
                    self.line_sink(line)
                    tail = [*tail, line][-20:]
                code = proc.wait()
            finally:
                if timer:
                    timer.cancel()
                with self._lock:
                    self._procs.pop(request.run_id, None)
        if code == 0:
            return JobResult(state="Succeeded", output_dir=str(out_dir))
        deadline_hit = bool(timer) and code in (-signal.SIGKILL, 128 + signal.SIGKILL)
        return JobResult(state="DeadlineExceeded" if deadline_hit else "Failed", output_dir=str(out_dir),
                         message=f"torchrun exited with code {code}; last lines:\n" + "\n".join(tail))

    @staticmethod
    def _kill(proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)

    def cancel(self, run_id: str) -> None:
        """Kill the running job of ``run_id`` (its whole process group); no-op if none."""
        with self._lock:
            proc = self._procs.get(run_id)
        if proc is not None:
            self._kill(proc)

    def cleanup(self, run_id: str, pipeline_state: str) -> str:
        """A local job lives in the launcher's process group: kill it unless the run succeeded."""
        if pipeline_state.strip().upper() == "SUCCEEDED":
            return "nothing to clean up"
        self.cancel(run_id)
        return f"killed local job {run_id} (if it was running)"
