"""Metrics sinks (rank 0 only): TensorBoard, a JSONL file beside it, or nothing.

One small interface in the shape of torchtitan's ``BaseLogger``: the
trainer talks to a :class:`MetricsSink`; :class:`MultiSink` fans out. Steps are optimizer steps.
On resume, both sinks drop what was logged after the resumed step (TensorBoard ``purge_step``,
JSONL rewritten), so a crash never leaves duplicate or orphaned points.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from stream_r1.utils.io import atomic_write_text


class MetricsSink(Protocol):
    """Where training metrics go."""

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Log scalar values (one JSONL line per call)."""
        ...

    def histogram(self, step: int, tag: str, values: np.ndarray) -> None:
        """Log a histogram of ``values``."""
        ...

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        """Log an ``[H, W, 3]`` uint8 image."""
        ...

    def video(self, step: int, tag: str, frames: np.ndarray, fps: int) -> None:
        """Log a ``[T, H, W, 3]`` uint8 clip (an animated GIF in TensorBoard)."""
        ...

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """Log the run's hyper-parameters with summary metrics."""
        ...

    def close(self) -> None:
        """Flush and release files."""
        ...


class NullSink:
    """Discards everything (ranks other than 0)."""

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Discard."""

    def histogram(self, step: int, tag: str, values: np.ndarray) -> None:
        """Discard."""

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        """Discard."""

    def video(self, step: int, tag: str, frames: np.ndarray, fps: int) -> None:
        """Discard."""

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """Discard."""

    def close(self) -> None:
        """Nothing to release."""


class JsonlSink(NullSink):
    """``metrics.jsonl``: one JSON object ``{"step": s, **scalars}`` per :meth:`scalars` call.

    Args:
        path: The JSONL file.
        resume_step: Keep only lines with ``step <= resume_step`` (``None`` = start fresh).
    """

    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept: list[str] = []
        if resume_step is not None and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line)["step"] <= resume_step:
                        kept.append(line)
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line torn by a crash
        atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the run)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Append one line; non-finite values are written as null."""
        row = {"step": step, **{k: (float(v) if math.isfinite(float(v)) else None) for k, v in values.items()}}
        self._f.write(json.dumps(row, sort_keys=True) + "\n")
        self._f.flush()

    def close(self) -> None:
        """Close the file."""
        self._f.close()


class TensorBoardSink:
    """A ``SummaryWriter`` event file under ``log_dir``.

    Args:
        log_dir: TensorBoard run directory.
        resume_step: Events after this step are purged (``SummaryWriter(purge_step=...)``).
    """

    def __init__(self, log_dir: str | Path, resume_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        purge = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge, flush_secs=10)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """One scalar summary per tag."""
        for tag, v in values.items():
            self.writer.add_scalar(tag, float(v), global_step=step)

    def histogram(self, step: int, tag: str, values: np.ndarray) -> None:
        """A histogram summary (exit steps: one bin per integer)."""
        values = np.asarray(values)
        if values.size:
            self.writer.add_histogram(tag, values, global_step=step, bins="auto")

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        """An HWC uint8 image."""
        self.writer.add_image(tag, image, global_step=step, dataformats="HWC")

    def video(self, step: int, tag: str, frames: np.ndarray, fps: int) -> None:
        """A GIF through ``add_video`` (moviepy 1.0.3 encodes it; moviepy 2 breaks it and without moviepy it silently writes nothing)."""
        vid = np.ascontiguousarray(frames.transpose(0, 3, 1, 2)[None])  # [1, T, 3, H, W] uint8
        self.writer.add_video(tag, vid, global_step=step, fps=fps)

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """``add_hparams`` into the same run directory."""
        clean = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in hparams.items()}
        self.writer.add_hparams(clean, metrics, run_name=".")

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.flush()
        self.writer.close()


class MultiSink(NullSink):
    """Forwards every call to several sinks."""

    def __init__(self, *sinks: MetricsSink) -> None:
        self.sinks = sinks

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for s in self.sinks:
            s.scalars(step, values)

    def histogram(self, step: int, tag: str, values: np.ndarray) -> None:
        for s in self.sinks:
            s.histogram(step, tag, values)

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        for s in self.sinks:
            s.image(step, tag, image)

    def video(self, step: int, tag: str, frames: np.ndarray, fps: int) -> None:
        for s in self.sinks:
            s.video(step, tag, frames, fps)

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        for s in self.sinks:
            s.hparams(hparams, metrics)

    def close(self) -> None:
        for s in self.sinks:
            s.close()


def effective_sample_size(weights: list[float]) -> float:
    """ESS ``(sum w)^2 / sum w^2`` of the rollout weights of one accumulation window (0 if empty)."""
    w = np.asarray(weights, dtype=np.float64)
    denom = float((w * w).sum())
    return float(w.sum() ** 2 / denom) if denom > 0 else 0.0
