"""What a local pipeline run produced, and where: collected on every exit path, printed by the CLI.

The summary is built from what can be seen *now*, each source on its own: the steps the console saw
finish, this run's directory under ``pipeline_root`` (never an older run's), the trained model on
local disk, the S3 objects under ``runs/<run-id>/`` and the registry. One unreachable source (the S3
server killed mid-run) is reported in one line and does not hide the others.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream_r1.ops.run_console import RunConsole
from stream_r1.utils.logging import get_logger

log = get_logger(__name__)


@dataclass
class LocalRunSummary:
    """What ``run_local`` produced."""

    run_id: str
    state: str
    """``SUCCEEDED``, ``FAILED`` or ``INTERRUPTED``."""
    bucket: str
    endpoint: str
    artifacts: list[str] = field(default_factory=list)
    """``s3://...`` of each step's outputs (with object counts)."""
    metrics: dict[str, float] = field(default_factory=dict)
    registered: str = ""
    tensorboard_logdir: str = ""
    """This run's TensorBoard directory on local disk ('' when its train step wrote none)."""
    error: str = ""
    """Why the run did not succeed: the failed step and its own error message."""
    wall_seconds: float = 0.0
    failed_task: str = ""
    steps: list[str] = field(default_factory=list)
    """``name: state (seconds)`` of each step, in order."""
    log_file: str = ""
    run_dir: str = ""
    """This run's directory under ``pipeline_root`` (every step's local outputs)."""
    local_model: str = ""
    """The exported student on local disk, when the train step got that far."""
    store_error: str = ""
    """Why the S3 objects could not be listed (the listing is then empty, not absent)."""
    exit_code: int = 1


def new_run_dirs(pipeline_root: Path, before: set[str]) -> Path | None:
    """This run's directory: the newest entry of ``pipeline_root`` not in ``before``."""
    if not pipeline_root.is_dir():
        return None
    fresh = [d for d in pipeline_root.iterdir() if d.is_dir() and d.name not in before]
    return max(fresh, key=lambda d: d.stat().st_mtime) if fresh else None


def collect_local(summary: LocalRunSummary, console: RunConsole | None, run_dir: Path | None,
                  train_dir: Path | None = None) -> None:
    """Steps, failure cause, this run's directory, the local model and TensorBoard logs.

    Args:
        summary: Filled in place.
        console: The run's console (steps seen, failure cause, log file).
        run_dir: This run's directory under ``pipeline_root`` (each step's KFP outputs).
        train_dir: The training run directory (on the shared volume); its model and TensorBoard logs are
            reported only when this run's train step ran, never an earlier run's.
    """
    trained = console is None or "train" in console.tasks
    if console is not None:
        summary.log_file = str(console.log_path)
        summary.steps = [f"{t.name}: {'ok' if t.state == 'SUCCESS' else t.state} ({t.seconds:.0f} s)"
                         for t in console.tasks.values()]
        failed = console.failed
        if failed is not None:
            summary.failed_task = failed.name
            cause = failed.cause or "no error message in its log"
            summary.error = f"step {failed.name} failed: {cause}"
        elif console.running is not None and summary.state != "SUCCEEDED":
            summary.failed_task = console.running.name
    if run_dir is not None:
        summary.run_dir = str(run_dir)
    if train_dir is None or not trained:
        return
    if (train_dir / "tensorboard").is_dir():
        summary.tensorboard_logdir = str(train_dir / "tensorboard")
    from stream_r1.ops.exports import find_network

    with contextlib.suppress(FileNotFoundError):
        summary.local_model = str(find_network(train_dir))


def collect_store(summary: LocalRunSummary, store: Any, registry_path: Path, model_name: str) -> None:
    """S3 objects under ``runs/<run-id>/``, the exit record, metrics and the registered version.

    Never raises for an unreachable store or registry: the problem goes into ``store_error``.
    """
    prefix = f"runs/{summary.run_id}"
    try:
        counts: dict[str, int] = {}
        for key in store.list_keys(prefix + "/"):
            step = "/".join(key.split("/")[:3]) + ("/" if key.count("/") > 2 else "")
            counts[step] = counts.get(step, 0) + 1
        summary.artifacts = [f"{store.uri(k)}  ({n} objects)" if k.endswith("/") else store.uri(k)
                             for k, n in sorted(counts.items())]
        if not summary.state and store.exists(f"{prefix}/status.json"):
            summary.state = str(store.get_json(f"{prefix}/status.json").get("state", ""))
        if store.exists(f"{prefix}/evaluate/metrics.json"):
            summary.metrics = {k: v for k, v in store.get_json(f"{prefix}/evaluate/metrics.json").items()
                               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    except Exception as e:  # a summary on every exit path: the store's failure is reported, not raised
        summary.store_error = f"S3 endpoint {summary.endpoint} could not be read: {str(e).splitlines()[0]}"
        log.debug("store listing failed", exc_info=True)
    try:
        from stream_r1.ops.registry.mlflow_registry import MlflowRegistry

        if registry_path.exists():
            info = MlflowRegistry(registry_path).get(model_name, summary.run_id)
            if info is not None:
                summary.registered = f"{info.name}:{info.version} -> {info.uri}"
    except Exception as e:  # same reason
        summary.store_error = (summary.store_error + "; " if summary.store_error else "") + \
            f"registry {registry_path} could not be read: {e}"


def format_summary(s: LocalRunSummary, data_dir: Path | None = None) -> str:
    """The summary as printed by ``stream-r1 pipeline run-local``: what exists where."""
    lines = [f"run {s.run_id}: {s.state} in {s.wall_seconds:.0f} s (S3 {s.endpoint or '-'}, bucket {s.bucket})"]
    if s.error:
        lines.append(f"error: {s.error}")
    if s.steps:
        lines.append("steps: " + ", ".join(s.steps))
    if s.log_file:
        lines.append(f"full log: {s.log_file}")
    lines.append("on local disk:")
    lines.append(f"  run directory: {s.run_dir or '(none: no step ran)'}")
    lines.append(f"  trained model: {s.local_model or '(none: training did not finish its export)'}")
    lines.append("in S3:")
    if s.store_error:
        lines.append(f"  {s.store_error}")
        if data_dir is not None:
            lines.append(f"  (the objects already uploaded stay in {data_dir}; a run with the same --workdir "
                         "serves them again)")
    for uri in s.artifacts:
        lines.append(f"  {uri}")
    if not s.artifacts and not s.store_error:
        lines.append("  (nothing under runs/" + s.run_id + "/)")
    if s.metrics:
        lines.append("metrics:")
        lines.extend(f"  {k} = {v:.6g}" for k, v in sorted(s.metrics.items()))
    lines.append(f"registered model: {s.registered or '(none: gate not passed or run did not get there)'}")
    if s.tensorboard_logdir:
        lines.append(f"TensorBoard: .venv/bin/tensorboard --logdir {s.tensorboard_logdir} --host 127.0.0.1")
        if any(f"runs/{s.run_id}/train/" in a for a in s.artifacts):
            lines.append(f"  (the same event files: s3://{s.bucket}/runs/{s.run_id}/train/tensorboard/)")
    return "\n".join(lines)
