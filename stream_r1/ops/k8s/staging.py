"""Stage a KFP ``train`` request onto the shared runs PVC, and copy the finished run back.

Inside KFP the launcher's input artifacts and its output directory are local to the launcher pod;
the training pods cannot see them. When a request's paths are not on the PVC, the launcher (which
mounts the same PVC at the same path) copies ``checkpoints.root`` / ``checkpoints.student_init``
onto it, points the job at ``<mount>/<job>/train``, and copies that directory back into the
step's output when the job succeeds. Large inputs are better fetched straight onto the PVC and
passed as PVC paths: then nothing is copied (docs/operations.md).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from stream_r1.ops.jobs.base import TrainJobRequest
from stream_r1.utils.logging import get_logger

_log = get_logger(__name__)
STAGED_KEYS = ("checkpoints.root", "checkpoints.student_init")
_DONE = ".stream-r1-staged"


@dataclass(frozen=True)
class StagedRequest:
    """The request the job runs, and where its run directory must be copied back to ('' = nowhere)."""

    request: TrainJobRequest
    copy_back_to: str = ""


def _under(path: str, mount: str) -> bool:
    p, m = Path(path).as_posix().rstrip("/"), Path(mount).as_posix().rstrip("/")
    return p == m or p.startswith(m + "/")


def _copy(src: Path, dst: Path) -> None:
    """Copy a file or tree once (a marker makes a launcher retry skip finished copies)."""
    marker = dst.parent / f"{dst.name}{_DONE}"
    if marker.exists():
        return
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    marker.touch()


def stage_request(request: TrainJobRequest, mount: str, job_name: str) -> StagedRequest:
    """Return a request whose paths all lie on the PVC mounted at ``mount``.

    Args:
        request: The KFP step's request (paths may be launcher-local artifact paths).
        mount: Where the runs PVC is mounted, in this pod and in the training pods.
        job_name: The run's job name (the staging folder on the PVC).

    Raises:
        FileNotFoundError: staging is needed but the PVC is not mounted here, or an input is missing.
    """
    if _under(request.output_dir, mount):
        return StagedRequest(request)
    if not Path(mount).is_dir():
        raise FileNotFoundError(
            f"request.output_dir={request.output_dir!r} is not on the runs PVC and {mount!r} is not mounted in the "
            f"launcher pod; mount the PVC there (kfp.kubernetes.mount_pvc(task, 'stream-r1-runs', '{mount}')) "
            "or pass an output_dir under it")
    base = Path(mount) / job_name
    overrides = []
    for item in request.overrides:
        key, _, value = item.partition("=")
        if key in STAGED_KEYS and value.startswith("/") and not _under(value, mount):
            src = Path(value)
            if not src.exists():
                raise FileNotFoundError(f"{key}={value!r} does not exist in the launcher pod; nothing to stage")
            dst = base / "inputs" / key.split(".")[-1] / src.name
            _log.info("staging %s -> %s", src, dst)
            _copy(src, dst)
            item = f"{key}={dst}"
        overrides.append(item)
    staged = replace(request, output_dir=str(base / "train"), overrides=tuple(overrides))
    return StagedRequest(staged, copy_back_to=request.output_dir)


def copy_back(staged: StagedRequest) -> None:
    """Copy the finished run directory from the PVC into the step's output directory."""
    if staged.copy_back_to:
        _log.info("copying %s -> %s", staged.request.output_dir, staged.copy_back_to)
        shutil.copytree(staged.request.output_dir, staged.copy_back_to, dirs_exist_ok=True)
