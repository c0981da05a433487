"""The job-backend interface shared by the local, PyTorchJob and TrainJob backends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

JobState = Literal["Succeeded", "Failed", "Cancelled", "DeadlineExceeded", "Detached"]
"""``Detached``: the launcher stopped watching (SIGTERM without a cancelled run, or a long API outage)
and left the job running; a retried step re-attaches to it."""


@dataclass(frozen=True, kw_only=True)
class TrainJobRequest:
    """What the KFP ``train`` step asks a backend to run.

    The command every backend runs is
    ``torchrun --nnodes N --nproc_per_node P -m stream_r1 train --config CONFIG [--set k=v ...]
    --output OUTPUT_DIR --resume auto``.
    """

    run_id: str
    """Unique, DNS-1035-safe id of the run (KFP run id or a generated one); names the cluster job."""
    config: str
    """Preset name or path to the resolved config YAML (visible to the job)."""
    output_dir: str
    """Run directory (checkpoints, TensorBoard logs, exports); a PVC path in a cluster."""
    overrides: tuple[str, ...] = ()
    """``section.key=value`` overrides passed as ``--set``."""
    num_nodes: int = 1
    """Nodes (Master + Workers)."""
    nproc_per_node: int = 1
    """Processes (GPUs) per node."""
    resume: str = "auto"
    """``auto`` (newest verified checkpoint in output_dir) or a checkpoint path."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment variables for the training processes."""

    def train_args(self) -> list[str]:
        """The ``stream_r1 train`` arguments (after ``-m stream_r1``)."""
        args = ["train", "--config", self.config, "--output", self.output_dir, "--resume", self.resume]
        for o in self.overrides:
            args += ["--set", o]
        return args


@dataclass(frozen=True, kw_only=True)
class JobResult:
    """Terminal outcome of a training job."""

    state: JobState
    """How the job ended."""
    output_dir: str
    """Where the run wrote its checkpoints and logs."""
    message: str = ""
    """Failure reason (the pod's error or the launcher's), empty on success."""
    restarts: int = 0
    """Pod/process restarts observed while waiting."""


class JobBackend(Protocol):
    """Runs a training request to completion (blocking) and reports the outcome."""

    name: str

    def run(self, request: TrainJobRequest) -> JobResult:
        """Start (or re-attach to) the job for ``request.run_id`` and wait for it to end."""
        ...

    def cancel(self, run_id: str) -> None:
        """Stop and delete the job of ``run_id`` if it exists (idempotent)."""
        ...

    def cleanup(self, run_id: str, pipeline_state: str) -> str:
        """The exit handler's clean-up for a run that ended in ``pipeline_state``; says what it did."""
        ...
