"""``run-local --runner docker``: every step in the image it uses in a cluster, through kfp's ``DockerRunner``.

kfp's ``DockerRunner`` speaks the Docker API; here that is podman's (``podman system service``, started and
stopped by ``container_runtime``). Each step runs in its pinned image (``ghcr.io/stream-r1/...:VERSION``,
built here by ``stream-r1 images build`` when missing or stale), on the host network so it reaches the
loopback SeaweedFS, with the store's keys as env. The train step's launcher runs its job with
``backend=container``: a sibling container in the train image, the local stand-in for a PyTorchJob.

The images run as uid 1000, so the pipeline root and the workdir (registry database, checkpoint source)
are made writable for it, and files the runner creates meanwhile get a permissive umask.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream_r1.ops import images, podman
from stream_r1.utils.logging import get_logger

log = get_logger(__name__)

RUNNERS = ("subprocess", "docker")
DOCKER_SDK_HINT = "pip install docker==7.1.0 (pinned in pyproject [ops]; `bash scripts/dev.sh setup`)"

# Every step's container prints one line the moment it starts, then execs kfp's command (passed as the arguments).
# Why: podman's Docker API sends the headers of ``GET /containers/ID/logs`` only with the container's first line of
# output. The docker SDK inspects the container right after those headers arrive (``logs()`` checks for a TTY), so
# for a step that is silent until it exits (``on_exit`` prints once, at its end) that inspect raced podman removing
# the auto-removed container, and podman answers the lost race with HTTP 500 ("does not exist in database"), which
# kfp's ``DockerRunner`` does not catch: the whole local run failed after every step had succeeded. With a first
# line at start the inspect finds the container running. Local runs only: on a cluster KFP's launcher owns the pod.
STEP_ENTRYPOINT = ["/bin/sh", "-c", 'echo "stream-r1: step container started"; exec "$@"', "stream-r1-step"]


@dataclass
class ContainerRuntime:
    """What ``run_local`` needs to run the DAG in containers."""

    socket: Path
    images: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    mounts: list[str] = field(default_factory=list)

    def runner(self) -> Any:
        """The ``kfp.local.DockerRunner``: host network, the env, ``mounts`` bind-mounted at their own paths, each
        step started through ``STEP_ENTRYPOINT`` (kfp's command becomes its arguments)."""
        import docker
        from kfp import local

        binds = [docker.types.Mount(target=m, source=m, type="bind") for m in self.mounts]
        return local.DockerRunner(network_mode="host", environment=dict(self.env), mounts=binds,
                                  entrypoint=list(STEP_ENTRYPOINT))


def check_prerequisites() -> None:
    """Raise ``podman.EngineMissing`` (one line: what is missing, how to get it) unless podman and the SDK exist."""
    podman.require()
    if importlib.util.find_spec("docker") is None:
        raise podman.EngineMissing(f"the docker SDK (kfp's DockerRunner client) is not installed; {DOCKER_SDK_HINT}")


def ensure_images(root: Path, cache: Path) -> dict[str, str]:
    """Each runtime image's tag, built first when missing or built from other inputs (reuses up-to-date ones)."""
    base = podman.ensure_local_base()
    out = {}
    for name in images.IMAGES:
        built = images.build_image(root, name, cache=cache, base_image=base)
        log.info("image %s %s (inputs %s)", built.tag, "built" if built.built else "up to date", built.inputs)
        out[name] = built.tag
    return out


def make_readable(tree: Path) -> None:
    """Files and directories under ``tree`` readable (and directories traversable) by every uid: the host
    writes some files ``0600`` (atomic writes through ``mkstemp``), which the images' uid 1000 could not read."""
    for p in [tree, *tree.rglob("*")]:
        if not p.is_symlink():
            p.chmod(p.stat().st_mode | (0o555 if p.is_dir() else 0o444))


def unfinished_tasks(run_root: Path) -> list[str]:
    """Tasks under ``run_root`` (one KFP local run's directory) without ``executor_output.json``.

    The KFP executor writes that file last, only when the component returned; kfp's ``DockerRunner`` reports
    success for a container that was removed before it could be waited on (podman removes an auto-remove
    container as soon as it exits), so a failed step shows up here, not in the task's status.
    """
    return sorted(d.name for d in run_root.iterdir() if d.is_dir() and not (d / "executor_output.json").is_file())


def _writable(path: Path) -> None:
    """World-writable (sticky) so the images' uid 1000 can write where the host user created things."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o1777)


@contextlib.contextmanager
def container_runtime(root: Path, workdir: Path, pipeline_root: Path, store_env: dict[str, str]) -> Iterator[ContainerRuntime]:
    """Images ready, podman's Docker API on ``workdir/podman/podman.sock``, the workdir writable for uid 1000.

    Raises:
        podman.EngineMissing: podman, runc, debootstrap or the docker SDK is missing (the message says how to fix).
    """
    check_prerequisites()
    tags = ensure_images(root, root / ".stream-r1" / "images")
    for d in (workdir, pipeline_root):
        _writable(d)
    for f in workdir.glob("registry.db*"):  # an earlier in-process run's registry, owned by the host user
        f.chmod(0o666)
    sock = workdir / "podman" / "podman.sock"
    service = podman.serve_socket(sock)
    sock.parent.chmod(0o755)
    sock.chmod(0o666)  # the launcher (uid 1000) starts the training container through it
    old_umask = os.umask(0)
    old_host = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = f"unix://{sock}"  # kfp's DockerRunner client (docker.from_env)
    try:
        env = {**store_env, "DOCKER_HOST": f"unix://{sock}", "STREAM_R1_TRAIN_IMAGE": tags["train"],
               "STREAM_R1_CONTAINER_MOUNTS": str(workdir), "STREAM_R1_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
        yield ContainerRuntime(socket=sock, images=tags, env=env, mounts=[str(workdir)])
    finally:
        os.umask(old_umask)
        if old_host is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = old_host
        service.terminate()
        try:
            service.wait(timeout=10)
        except Exception:  # a wedged service must not hide the run's result
            service.kill()
