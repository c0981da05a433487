"""The console of a local pipeline run: every line into a log file, a compact per-step view on screen.

kfp.local prints each task's executor input/output JSON and every subprocess line to stdout; on a
tiny run that is hundreds of lines, most of them JSON. :class:`RunConsole` takes over ``sys.stdout``
and ``sys.stderr`` for the run: everything goes (ANSI colours stripped) into the log file, and the
console shows one line per step start and end. On a terminal the running step's line is redrawn in
place with its elapsed time; when stdout is not a terminal (CI, a pod's log) a progress line is
printed every ``heartbeat_seconds`` instead (``STREAM_R1_PROGRESS_SECONDS``, default 30), so a slow
step never looks like a hang. When a step fails, its own error message is kept as the cause.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TextIO

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_TASK_START = re.compile(r"Executing task '([^']+)'")
_TASK_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
_PIPELINE_END = re.compile(r"Pipeline '([^']+)' finished with status (\w+)")
_CLI_ERROR = re.compile(r"(stream-r1 [\w-]+(?: [\w-]+)?: error: .+)")
_EXCEPTION = re.compile(r"^(?:\[KFP Executor[^\]]*\]:\s*)?((?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit)): (.+)$")
_KFP_NOISE = re.compile(r"^\[KFP Executor [^\]]*\]:\s*")
_NOT_PROGRESS = re.compile(r"executor_input|executor output|Looking for component|Loading KFP component|Traceback|"
                           r"^File \"|^[\[\]{}\"^~]|^-+$")
"""Lines not worth showing as a step's latest activity: kfp's executor plumbing, JSON, traceback frames."""

DEFAULT_HEARTBEAT_SECONDS = 30.0


def failure_cause(lines: list[str]) -> str:
    """The step's own error message from its log lines: our CLI's one-line error if a step ran the CLI,
    else the last ``SomeError: message`` line of the traceback; ``""`` when neither is there."""
    for line in reversed(lines):
        m = _CLI_ERROR.search(line)
        if m:
            return m.group(1).strip()
    for line in reversed(lines):
        m = _EXCEPTION.match(line.strip())
        if m:
            return f"{m.group(1)}: {m.group(2).strip()}"
    return ""


@dataclass
class TaskRecord:
    """One pipeline step as the console saw it."""

    name: str
    state: str = "RUNNING"
    """``RUNNING``, then kfp's final status (``SUCCESS``, ``FAILURE``, ...)."""
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    cause: str = ""
    """The step's own error message from its log (kept for every step: kfp's DockerRunner can report
    success for a container that failed, see :meth:`RunConsole.mark_failed`)."""

    @property
    def seconds(self) -> float:
        """Run time so far (or in total once ended)."""
        return (self.ended or time.monotonic()) - self.started


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class _Tee(io.TextIOBase):
    """A text stream that hands complete lines to the console."""

    def __init__(self, console: RunConsole) -> None:
        self._console = console
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        text = self._partial + s
        *lines, self._partial = text.split("\n")
        for line in lines:
            self._console.feed(line)
        return len(s)

    def flush(self) -> None:
        if self._partial:
            self._console.feed(self._partial)
            self._partial = ""


class RunConsole:
    """Context manager owning ``sys.stdout``/``sys.stderr`` for one run.

    Args:
        log_path: The run's full log (created; appended to).
        out: Where the compact view goes (default: the process's stdout at ``__enter__``).
        interactive: Redraw a live status line (default: ``out`` is a TTY).
        heartbeat_seconds: Progress-line period when not interactive (default ``STREAM_R1_PROGRESS_SECONDS``
            or 30 s); 0 disables them.
    """

    def __init__(self, log_path: str | Path, *, out: TextIO | None = None, interactive: bool | None = None,
                 heartbeat_seconds: float | None = None) -> None:
        self.log_path = Path(log_path)
        self._out_arg = out
        self._interactive_arg = interactive
        env = os.environ.get("STREAM_R1_PROGRESS_SECONDS")
        self.heartbeat_seconds = heartbeat_seconds if heartbeat_seconds is not None else (
            float(env) if env else DEFAULT_HEARTBEAT_SECONDS)
        self.tasks: dict[str, TaskRecord] = {}
        self.pipeline_state = ""
        """kfp's final pipeline status (``SUCCESS``/``FAILURE``), once printed."""
        self._lines: list[str] = []  # the running task's recent lines (for its failure cause)
        self._last_line = ""
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._status_shown = False
        self.started = time.monotonic()

    # ---- context -----------------------------------------------------------------------------
    def __enter__(self) -> RunConsole:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "a", encoding="utf-8")  # closed in __exit__
        self._saved = (sys.stdout, sys.stderr)
        self.out = self._out_arg or sys.stdout
        self.interactive = self._interactive_arg if self._interactive_arg is not None else self.out.isatty()
        tee = _Tee(self)
        sys.stdout = sys.stderr = tee
        # Our own loggers hold the streams they were configured with: point them at the log too.
        self._handlers = [(h, h.setStream(tee)) for h in logging.getLogger("stream_r1").handlers
                          if isinstance(h, logging.StreamHandler) and h.stream in self._saved]
        self._thread = threading.Thread(target=self._tick, name="run-console", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        tee = sys.stdout
        sys.stdout, sys.stderr = self._saved
        for handler, stream in self._handlers:
            handler.setStream(stream)
        if isinstance(tee, _Tee):
            tee.flush()
        with self._lock:
            self._clear_status()
            self._log.close()

    # ---- input -------------------------------------------------------------------------------
    def feed(self, raw: str) -> None:
        """One line of the run's output: logged, parsed for step starts/ends."""
        line = ANSI.sub("", raw).rstrip("\r")
        with self._lock:
            self._log.write(line + "\n")
            self._log.flush()
            if m := _TASK_START.search(line):
                self._start(m.group(1))
            elif m := _TASK_END.search(line):
                self._end(m.group(1), m.group(2))
            elif m := _PIPELINE_END.search(line):
                self.pipeline_state = m.group(2)
            else:
                self._lines = [*self._lines[-199:], line]
                text = _KFP_NOISE.sub("", line.strip())
                if text and not _NOT_PROGRESS.search(text):
                    self._last_line = text

    def note(self, text: str) -> None:
        """A line of our own on the console (and in the log)."""
        with self._lock:
            self._log.write(text + "\n")
            self._emit(text)

    # ---- state -------------------------------------------------------------------------------
    @property
    def failed(self) -> TaskRecord | None:
        """The first step that ended in failure, if any."""
        return next((t for t in self.tasks.values() if t.state not in ("RUNNING", "SUCCESS")), None)

    @property
    def running(self) -> TaskRecord | None:
        """The step running now, if any."""
        return next((t for t in reversed(self.tasks.values()) if t.state == "RUNNING"), None)

    def _start(self, name: str) -> None:
        self.tasks[name] = TaskRecord(name)
        self._lines, self._last_line = [], ""
        if not self.interactive:
            self._emit(f"[{time.strftime('%H:%M:%S')}] {name}: started")
        else:
            self._draw_status()

    def _end(self, name: str, state: str) -> None:
        task = self.tasks.setdefault(name, TaskRecord(name))
        task.state, task.ended = state, time.monotonic()
        task.cause = failure_cause(self._lines)
        mark = "ok" if state == "SUCCESS" else state
        stamp = "" if self.interactive else f"[{time.strftime('%H:%M:%S')}] "
        self._emit(f"{stamp}{name}: {mark} in {_duration(task.seconds)}"
                   + (f" — {task.cause}" if task.cause and state != "SUCCESS" else ""))

    def mark_failed(self, names: list[str]) -> None:
        """Record ``names`` as failed although kfp reported them done (a container that exited without
        writing its outputs); their own error message, if their log had one, becomes the run's cause."""
        with self._lock:
            for name in names:
                task = self.tasks.setdefault(name, TaskRecord(name))
                task.state = "FAILURE"
                self._log.write(f"{name}: exited without writing its outputs; marked FAILURE"
                                + (f" — {task.cause}" if task.cause else "") + "\n")

    # ---- output ------------------------------------------------------------------------------
    def _emit(self, text: str) -> None:
        self._clear_status()
        self.out.write(text + "\n")
        self.out.flush()
        if self.interactive:
            self._draw_status()

    def _status_text(self) -> str:
        task = self.running
        if task is None:
            return ""
        last = f"  {self._last_line[:80]}" if self._last_line else ""
        return f"{task.name}: running {_duration(task.seconds)}{last}"

    def _draw_status(self) -> None:
        text = self._status_text()
        if text:
            width = 120
            self.out.write("\r\x1b[2K" + text[:width])
            self.out.flush()
            self._status_shown = True

    def _clear_status(self) -> None:
        if self._status_shown:
            self.out.write("\r\x1b[2K")
            self.out.flush()
            self._status_shown = False

    def _tick(self) -> None:
        last_beat = time.monotonic()
        while not self._stop.wait(1.0):
            with self._lock:
                if self.interactive:
                    self._draw_status()
                elif self.heartbeat_seconds > 0 and time.monotonic() - last_beat >= self.heartbeat_seconds:
                    last_beat = time.monotonic()
                    text = self._status_text() or f"running {_duration(time.monotonic() - self.started)}"
                    self.out.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
                    self.out.flush()
