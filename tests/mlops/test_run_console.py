"""The run console's view of kfp.local's output: steps, failure causes, the log file, no JSON on screen.

The input lines have kfp.local's own format (``kfp.local.logging_utils``: ``HH:MM:SS.mmm - LEVEL - ...``,
ANSI-coloured task names and statuses, the executor's ``[KFP Executor ...]`` lines); the end-to-end check
of the same view is the slow ``test_run_local_faults`` run.
"""

from __future__ import annotations

import io
import re
import sys

from stream_r1.ops.run_console import RunConsole, failure_cause

CYAN, GREEN, RED, END = "\x1b[96m", "\x1b[92m", "\x1b[91m", "\x1b[0m"


def _kfp_task(name: str, body: list[str], status: str) -> list[str]:
    color = GREEN if status == "SUCCESS" else RED
    return [f"08:54:29.535 - INFO - Executing task {CYAN}'{name}'{END}", "08:54:29.536 - INFO - Streamed logs:", "",
            *(f"    {line}" for line in body),
            f"08:54:31.521 - INFO - Task {CYAN}'{name}'{END} finished with status {color}{status}{END}"]


def test_steps_causes_and_a_compact_screen(tmp_path):
    screen = io.StringIO()
    lines = [
        "08:54:29.523 - INFO - Running pipeline: \x1b[95m'stream-r1'\x1b[0m",
        *_kfp_task("fetch-checkpoints", ["[KFP Executor 2026-12-01 08:54:29,748 INFO]: Got executor_input:",
                                         "{", '    "inputs": {}', "}"], "SUCCESS"),
        *_kfp_task("ode-init", [
            "[KFP Executor 2026-12-01 08:54:32,100 INFO]: running: python -m stream_r1 ode-pairs ...",
            "Traceback (most recent call last):",
            '  File "/x/steps.py", line 70, in run_cli',
            "RuntimeError: `stream-r1 ode-pairs` exited with code 2:",
            "stream-r1 ode-pairs: error: prompt file 'p.txt' does not exist; set data.prompts to a file",
        ], "FAILURE"),
        f"08:54:40.000 - ERROR - Pipeline \x1b[95m'stream-r1'\x1b[0m finished with status {RED}FAILURE{END}",
    ]
    before = (sys.stdout, sys.stderr)
    with RunConsole(tmp_path / "logs" / "run.log", out=screen, interactive=False, heartbeat_seconds=0) as console:
        for line in lines:
            print(line)  # what kfp.local does: print to sys.stdout, which the console owns
        print("a warning on stderr", file=sys.stderr)
    shown = screen.getvalue().splitlines()
    assert [s.split("] ", 1)[1] for s in shown] == [
        "fetch-checkpoints: started", "fetch-checkpoints: ok in 0s", "ode-init: started",
        "ode-init: FAILURE in 0s — stream-r1 ode-pairs: error: prompt file 'p.txt' does not exist; set "
        "data.prompts to a file"]
    assert console.pipeline_state == "FAILURE" and console.failed is not None and console.failed.name == "ode-init"
    log = (tmp_path / "logs" / "run.log").read_text()
    assert "Got executor_input" in log and "a warning on stderr" in log and "\x1b[" not in log
    assert (sys.stdout, sys.stderr) == before  # the streams are given back


def test_failure_cause_prefers_the_cli_line_then_the_last_exception():
    assert failure_cause(["Traceback (most recent call last):", '  File "x", line 1',
                          "FileNotFoundError: ode_init_path 'm.pt' not found; pass a file"]) == \
        "FileNotFoundError: ode_init_path 'm.pt' not found; pass a file"
    assert failure_cause(["[KFP Executor 2026-12-01 09:00:00,000 INFO]: x",
                          "urllib3.exceptions.MaxRetryError: HTTPConnectionPool(host='h', port=1): Max retries"]) == \
        "urllib3.exceptions.MaxRetryError: HTTPConnectionPool(host='h', port=1): Max retries"
    assert failure_cause(["nothing went wrong here"]) == ""


def test_progress_lines_when_not_a_terminal(tmp_path):
    import time

    screen = io.StringIO()
    with RunConsole(tmp_path / "run.log", out=screen, interactive=False, heartbeat_seconds=1) as console:
        print(f"08:54:29.535 - INFO - Executing task {CYAN}'train'{END}")
        print("    [KFP Executor 2026-12-01 08:54:29,748 INFO]: local job r: torchrun ...")
        time.sleep(2.5)
        assert console.running is not None and console.running.name == "train"
    beats = [s for s in screen.getvalue().splitlines() if "train: running" in s]
    assert beats and "local job r: torchrun" in beats[-1]


def test_on_a_terminal_the_running_step_is_redrawn_in_place(tmp_path):
    import time

    screen = io.StringIO()
    with RunConsole(tmp_path / "run.log", out=screen, interactive=True) as console:
        print(f"08:54:29.535 - INFO - Executing task {CYAN}'train'{END}")
        time.sleep(1.5)
        print(f"08:54:31.521 - INFO - Task {CYAN}'train'{END} finished with status {GREEN}SUCCESS{END}")
    text = screen.getvalue()
    assert "\r\x1b[2Ktrain: running" in text  # the live line, overwritten in place
    assert re.search(r"train: ok in \d+s\n$", text), text  # the final line, the live one cleared
    assert console.tasks["train"].state == "SUCCESS"


def test_a_step_kfp_called_a_success_can_be_marked_failed_with_its_own_error(tmp_path):
    # kfp's DockerRunner reports SUCCESS for a container podman removed before it was waited on; run-local
    # then finds the task's outputs missing and marks it failed: the cause must be the step's own error.
    lines = _kfp_task("ode-init", [
        "[KFP Executor 2026-12-01 10:31:53,478 INFO]: [ode-init] Traceback (most recent call last):",
        "[KFP Executor 2026-12-01 10:31:53,478 INFO]: [ode-init]   File \"/x/dcp_io.py\", line 86",
        "ValueError: refusing to load /w/.metadata: not a plain DCP metadata file",
    ], "SUCCESS")
    screen = io.StringIO()
    with RunConsole(tmp_path / "run.log", out=screen, interactive=False, heartbeat_seconds=0) as console:
        for line in lines:
            print(line)
        assert console.failed is None  # as kfp reported it
        console.mark_failed(["ode-init"])
    assert console.failed is not None and console.failed.name == "ode-init"
    assert console.failed.cause == "ValueError: refusing to load /w/.metadata: not a plain DCP metadata file"
    assert "ode-init: ok in" in screen.getvalue()  # the live line showed what kfp said at the time
    assert "marked FAILURE — ValueError: refusing to load" in (tmp_path / "run.log").read_text()
