"""The ``container`` job backend: the training job as a sibling container in the train image.

The local stand-in for a PyTorchJob: the launcher step (ops image, no torch) asks the container engine,
through its Docker-compatible API (``DOCKER_HOST``, podman's ``system service`` here), to run
``torchrun --standalone -m stream_r1 train ...`` in the train image, waits for it, streams its log into the
step log and ``<output_dir>/train_job.log``, and reports its exit code. The job sees the same paths as the
launcher: the directories in ``$STREAM_R1_CONTAINER_MOUNTS`` (the KFP pipeline root, which kfp's
``DockerRunner`` mounts at its host path) are bind-mounted at the same paths.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stream_r1.ops.jobs.base import JobResult, TrainJobRequest
from stream_r1.utils.logging import get_logger

log = get_logger(__name__)

IMAGE_ENV = "STREAM_R1_TRAIN_IMAGE"
MOUNTS_ENV = "STREAM_R1_CONTAINER_MOUNTS"
LABEL = "io.stream-r1.run-id"


class ContainerJobBackend:
    """Runs a ``TrainJobRequest`` in ``image`` through the Docker API at ``$DOCKER_HOST``.

    Args:
        image: Train image (default ``$STREAM_R1_TRAIN_IMAGE``).
        mounts: Host directories mounted at the same path (default ``$STREAM_R1_CONTAINER_MOUNTS``, ``:``-separated).
        client: A ``docker.DockerClient`` (default: ``docker.from_env()``).
        line_sink: Where each output line goes (default: this module's logger at INFO).

    Raises:
        ValueError: no image, or ``output_dir`` outside every mount (the job could not write it back).
    """

    name = "container"

    def __init__(self, image: str | None = None, *, mounts: list[str] | None = None, client: Any = None,
                 line_sink: Callable[[str], None] | None = None) -> None:
        self.image = image or os.environ.get(IMAGE_ENV, "")
        if not self.image:
            raise ValueError(f"backend=container needs the train image: set ${IMAGE_ENV} (run-local --runner docker "
                             "sets it)")
        self.mounts = mounts if mounts is not None else [m for m in os.environ.get(MOUNTS_ENV, "").split(":") if m]
        self._client = client
        self.line_sink = line_sink or (lambda line: log.info("[train] %s", line))

    @property
    def client(self) -> Any:
        if self._client is None:
            import docker

            self._client = docker.from_env()
        return self._client

    def command(self, request: TrainJobRequest) -> list[str]:
        """``torchrun --standalone`` of ``stream_r1 train`` (the PyTorchJob's command, one node)."""
        if request.num_nodes != 1:
            raise ValueError(f"the container backend runs one node, got num_nodes={request.num_nodes}")
        return ["python", "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={request.nproc_per_node}",
                "-m", "stream_r1", *request.train_args()]

    def _check_mounted(self, path: str) -> None:
        p = Path(path).resolve()
        if not any(p.is_relative_to(Path(m).resolve()) for m in self.mounts):
            raise ValueError(f"output_dir {path} is outside the directories mounted into the job ({self.mounts}); "
                             f"add its parent to ${MOUNTS_ENV}")

    def run(self, request: TrainJobRequest) -> JobResult:
        """Run the job to completion, streaming its output; never raises for a failed job."""
        self._check_mounted(request.output_dir)
        out_dir = Path(request.output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        env = {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
               "STREAM_R1_PROGRESS": os.environ.get("STREAM_R1_PROGRESS", "0"), **request.env}
        volumes = {m: {"bind": m, "mode": "rw"} for m in self.mounts}
        cmd = self.command(request)
        log.info("container job %s in %s: %s", request.run_id, self.image, " ".join(cmd))
        container = self.client.containers.run(self.image, cmd, detach=True, environment=env, volumes=volumes,
                                               network_mode="host", labels={LABEL: request.run_id})
        tail: list[str] = []
        try:
            with open(out_dir / "train_job.log", "a", encoding="utf-8") as logf:
                for chunk in container.logs(stream=True, follow=True):
                    for line in chunk.decode(errors="replace").splitlines():
                        logf.write(line + "\n")
                        self.line_sink(line)
                        tail = [*tail, line][-20:]
            code = int(container.wait()["StatusCode"])
        finally:
            container.remove(force=True)
        if code == 0:
            return JobResult(state="Succeeded", output_dir=str(out_dir))
        return JobResult(state="Failed", output_dir=str(out_dir),
                         message=f"the training container exited with code {code}; last lines:\n" + "\n".join(tail))

    def cleanup(self, run_id: str, pipeline_state: str) -> str:
        """The exit handler's clean-up: remove the run's job containers unless the run succeeded."""
        if pipeline_state.strip().upper() == "SUCCEEDED":
            return "nothing to clean up"
        self.cancel(run_id)
        return f"removed the job containers of {run_id} (if any)"

    def cancel(self, run_id: str) -> None:
        """Kill and remove the job containers of ``run_id``; no-op if none."""
        for c in self.client.containers.list(all=True, filters={"label": f"{LABEL}={run_id}"}):
            c.remove(force=True)
