"""``pipeline run-local`` under faults: bad endpoints fail in seconds, a stop signal stops the whole
process tree, a killed S3 server and a failing step still end in a summary that says what exists where.

The slow cases run the real CLI as a subprocess on tiny checkpoints with its own SeaweedFS, as a CI
job would, and look at the real process table (``/proc``) afterwards.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream_r1.cli import main
from stream_r1.ops.process_tree import descendants
from stream_r1.ops.seaweed import free_port
from stream_r1.ops.store import ArtifactStore

pytestmark = pytest.mark.s3

REPO = Path(__file__).resolve().parents[2]


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and " INFO " not in ln]
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


# ---------------------------------------------------------------------------------------- pre-flight (fast)
def test_closed_endpoint_port_fails_before_any_step(tmp_path, capsys):
    endpoint = f"http://127.0.0.1:{free_port()}"
    assert main(["pipeline", "run-local", "--workdir", str(tmp_path / "w"), "--endpoint", endpoint]) == 2
    line = _one_line(capsys)
    assert endpoint in line and "connection refused" in line
    assert not (tmp_path / "w" / "tiny-checkpoints").exists()  # nothing ran


def test_wrong_keys_at_the_endpoint_fail_before_any_step(seaweed, tmp_path, capsys, monkeypatch):
    bad = dataclasses.replace(seaweed, secret_key="not-the-key")
    for k, v in bad.env().items():
        monkeypatch.setenv(k, v)
    assert main(["pipeline", "run-local", "--workdir", str(tmp_path / "w"), "--endpoint", seaweed.url]) == 2
    line = _one_line(capsys)
    assert "rejected access key" in line and seaweed.access_key in line
    assert not (tmp_path / "w" / "tiny-checkpoints").exists()


def test_an_endpoint_that_is_no_s3_server_fails_before_any_step(tmp_path, capsys, monkeypatch):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class NotS3(BaseHTTPRequestHandler):  # a web server (or proxy) on the port someone typed
        def do_GET(self):
            self.send_response(404)
            self.end_headers()

        do_HEAD = do_PUT = do_GET

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotS3)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    try:
        endpoint = f"http://127.0.0.1:{server.server_port}"
        assert main(["pipeline", "run-local", "--workdir", str(tmp_path / "w"), "--endpoint", endpoint]) == 2
    finally:
        server.shutdown()
    line = _one_line(capsys)
    assert endpoint in line and "not as an S3 server" in line
    assert not (tmp_path / "w" / "tiny-checkpoints").exists()


@pytest.mark.parametrize("run_id", ["My_Run", "../../x", "a" * 49])
def test_bad_run_id_parameter_fails_before_any_work(run_id, tmp_path, capsys):
    assert main(["pipeline", "run-local", "--workdir", str(tmp_path / "w"), "--param", f"run_id={run_id}"]) == 2
    assert "is not a valid run id" in _one_line(capsys)
    assert not (tmp_path / "w" / "tiny-checkpoints").exists()


def test_a_rerun_under_the_same_prefix_replaces_the_old_files(seaweed, bucket_name, tmp_path):
    # TensorBoard names event files by time: without removing the first run's, a rerun piled them up.
    store = ArtifactStore(seaweed, bucket_name)
    store.ensure_bucket()
    for run, name in (("a", "events.out.tfevents.1"), ("b", "events.out.tfevents.2")):
        tb = tmp_path / run / "tensorboard"
        tb.mkdir(parents=True)
        (tb / name).write_bytes(run.encode() * 10)
        (tb / "metrics.jsonl").write_text(f'{{"run": "{run}"}}\n')
        store.upload_dir(tmp_path / run, "runs/r/train")
        removed = store.remove_stale("runs/r/train", {f"tensorboard/{name}", "tensorboard/metrics.jsonl"})
    assert removed == ["runs/r/train/tensorboard/events.out.tfevents.1"]
    assert sorted(store.list_keys("runs/r/train/")) == [
        "runs/r/train/MANIFEST.sha256.json", "runs/r/train/tensorboard/events.out.tfevents.2",
        "runs/r/train/tensorboard/metrics.jsonl"]


# ---------------------------------------------------------------------------------------- real runs (slow)
def _start(workdir: Path, *extra: str, progress_seconds: str = "2") -> subprocess.Popen[str]:
    env = {**os.environ, "STREAM_R1_PROGRESS_SECONDS": progress_seconds, "PYTHONUNBUFFERED": "1"}
    for k in ("STREAM_R1_S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(k, None)
    return subprocess.Popen([sys.executable, "-m", "stream_r1", "pipeline", "run-local", "--workdir", str(workdir),
                             "--param", 'overrides=["train.num_optimizer_steps=2"]', *extra],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _read_until(proc: subprocess.Popen[str], pattern: str, timeout: float = 600) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if re.search(pattern, line):
            return lines
    raise AssertionError(f"{pattern!r} not seen; output so far:\n" + "\n".join(lines[-40:]))


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if text in cmd and state != "Z":
                found.append(f"{entry.name}: {cmd}")
    return found


@pytest.mark.slow
def test_a_failing_step_names_itself_and_its_cause_with_a_compact_console(tmp_path):
    work = tmp_path / "w"
    older = work / "pipeline_root" / "stream-r1-older-run" / "train" / "run" / "tensorboard"
    older.mkdir(parents=True)  # an earlier run's TensorBoard dir: a failed run must not point at it
    proc = _start(work, "--param", "ode_init_path=/nonexistent/missing.pt", "--param", "run_id=fails-1")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1, out
    assert re.search(r"error: step ode-init failed: FileNotFoundError: ode_init_path '/nonexistent/missing\.pt' "
                     r"not found", out), out
    assert "run fails-1: FAILED" in out and "stream-r1-older-run" not in out and "TensorBoard:" not in out, out
    assert "Traceback" not in out and "executor_input" not in out and "KFP Executor" not in out, out
    assert re.search(r"fetch-checkpoints: ok in \d+s", out) and re.search(r"ode-init: FAILURE in \d+s", out), out
    log_file = Path(re.search(r"full log: (\S+)", out).group(1))
    log_text = log_file.read_text()
    assert "KFP Executor" in log_text and "Traceback" in log_text  # everything is kept, in the log
    assert len(out.splitlines()) < len(log_text.splitlines()) / 4, out


@pytest.mark.slow
@pytest.mark.parametrize("moment", [r"fetch-checkpoints: started", r"ode-init: (started|running)"])
def test_sigterm_stops_the_whole_process_tree_and_still_summarises(moment, tmp_path):
    # "started" is printed just before kfp.local's task thread launches the step's process: the signal
    # races that launch, which must not outlive the run either.
    work = tmp_path / "w"
    proc = _start(work, "--param", "run_id=stopped-1")
    seen = _read_until(proc, moment)
    assert _processes_mentioning(str(work / "seaweed")), "SeaweedFS should be running by now"
    tree = descendants(proc.pid)
    assert tree
    proc.send_signal(signal.SIGTERM)  # what a CI timeout sends: to the top process only
    rest, _ = proc.communicate(timeout=120)
    out = "\n".join(seen) + "\n" + rest
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "run stopped-1: INTERRUPTED" in out and "stopped by SIGTERM" in out and "Traceback" not in out
    time.sleep(1)
    assert not _processes_mentioning(str(work)), "processes of the run outlived it"
    assert not [p for p in tree if Path(f"/proc/{p}").exists()
                and (Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z")]


@pytest.mark.slow
def test_killing_the_s3_server_mid_run_ends_in_a_summary_naming_the_local_model(tmp_path):
    work = tmp_path / "w"
    proc = _start(work, "--param", "run_id=s3-dies")
    seen = _read_until(proc, r"evaluate: (started|running)")  # training done: its model is on local disk
    weed = [int(p.split(":")[0]) for p in _processes_mentioning(str(work / "seaweed")) if " mini " in p]
    assert weed, "no SeaweedFS process found"
    for pid in weed:
        os.kill(pid, signal.SIGKILL)
    rest, _ = proc.communicate(timeout=600)
    out = "\n".join(seen) + "\n" + rest
    assert proc.returncode == 1, out
    assert "Traceback" not in out and "run s3-dies: FAILED" in out
    assert re.search(r"error: step evaluate failed: .*(unreachable|Connection)", out), out
    model = re.search(r"trained model: (\S+)", out).group(1)
    assert (Path(model) / "config.json").is_file(), out  # the model that exists locally (a diffusers dir)
    assert "could not be read" in out and str(work / "seaweed") in out
