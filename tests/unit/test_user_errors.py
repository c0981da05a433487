"""Everyday mistakes: one line on stderr naming the value and the fix, exit status 2, before heavy work.

Each case runs the real CLI entry (``stream_r1.cli.main``) in-process. Output locations that are a
file, on a read-only filesystem or on a full one are real: a tmpfs mounted read-only and a tmpfs
filled to the last byte (root only; skipped, with the reason, where mounting is not permitted —
``chmod`` cannot make a directory read-only for root).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stream_r1.cli import main

PROMPTS = str(Path(__file__).resolve().parents[1] / "assets" / "prompts" / "tiny.txt")


def run_cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    """Exit status and stderr of ``stream-r1 ARGV`` (argparse's SystemExit folded into the status)."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err


def assert_one_line(code: int, err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip() and " INFO " not in ln]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def _mount_tmpfs(target: Path, options: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or 'mount failed'}); needs root with "
                    "CAP_SYS_ADMIN")


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``mounted("ro")`` / ``mounted("full")``: a real read-only or completely full filesystem."""
    if shutil.which("mount") is None:
        pytest.skip("no `mount` binary: cannot build a read-only or full filesystem")
    mounts: list[Path] = []

    def make(kind: str) -> Path:
        target = tmp_path / f"mnt-{kind}"
        _mount_tmpfs(target, "ro,size=64k" if kind == "ro" else "size=128k")
        mounts.append(target)
        if kind == "full":
            with open(target / "filler", "wb", buffering=0) as f:  # unbuffered: fill to ENOSPC
                try:
                    while True:
                        f.write(b"\0" * 4096)
                except OSError:
                    pass
        return target

    yield make
    for m in mounts:
        if subprocess.run(["umount", str(m)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(m)], check=False)


@pytest.fixture(scope="module")
def tiny_copy(tiny_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(shutil.copytree(tiny_checkpoints, tmp_path_factory.mktemp("tiny-copy") / "tiny"))


# ---------------------------------------------------------------------------------------- outputs
def _commands(tiny: Path, out: Path) -> dict[str, tuple[list[str], str]]:
    """Every command with an output location: (argv, the flag named in the error)."""
    root = f"checkpoints.root={tiny}"
    return {
        "generate": (["generate", "--config", "tiny_cpu", "--set", root, "--checkpoint", str(tiny / "ode_init.pt"),
                      "--prompts", PROMPTS, "--output", str(out)], "--output"),
        "train": (["train", "--config", "tiny_cpu", "--set", root, "--set", f"data.prompts={PROMPTS}",
                   "--output", str(out)], "--output"),
        "run-local": (["pipeline", "run-local", "--workdir", str(out)], "--workdir"),
        "compile": (["pipeline", "compile", "--output", str(out / "p.yaml")], "--output"),
        "make-tiny-checkpoints": (["make-tiny-checkpoints", str(out)], "DIR"),
        "k8s-manifest": (["k8s-manifest", "-o", str(out / "job.yaml")], "--output"),
    }


COMMANDS = ["generate", "train", "run-local", "compile", "make-tiny-checkpoints", "k8s-manifest"]


@pytest.mark.parametrize("command", COMMANDS)
def test_output_that_is_a_file(command, capsys, tmp_path, tiny_checkpoints):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker if command in ("generate", "train", "run-local", "make-tiny-checkpoints") else blocker / "sub"
    argv, flag = _commands(tiny_checkpoints, out)[command]
    code, err = run_cli(capsys, argv)
    assert_one_line(code, err, flag, str(blocker), "is a file")
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("kind, reason", [("ro", "read-only"), ("full", "No space left")])
@pytest.mark.parametrize("command", COMMANDS)
def test_output_on_a_read_only_or_full_filesystem(command, kind, reason, capsys, mounted, tiny_checkpoints):
    mount = mounted(kind)
    argv, flag = _commands(tiny_checkpoints, mount / "out")[command]
    code, err = run_cli(capsys, argv)
    assert_one_line(code, err, flag, str(mount / "out"), reason)


# ---------------------------------------------------------------------------------------- devices
@pytest.mark.parametrize("device", ["tpu7", "cuda"])
@pytest.mark.parametrize("command", ["generate", "evaluate"])
def test_unavailable_device(device, command, capsys, tmp_path, tiny_checkpoints):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    root = f"checkpoints.root={tiny_checkpoints}"
    argv = [command, "--config", "tiny_cpu", "--set", root, "--checkpoint", str(tiny_checkpoints / "ode_init.pt"),
            "--output", str(tmp_path / "out"), "--device", device]
    if command == "generate":
        argv += ["--prompts", PROMPTS]
    code, err = run_cli(capsys, argv)
    assert_one_line(code, err, f"--device {device!r}", "--device cpu")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------- flags and configs
def test_unknown_log_level(capsys):
    code, err = run_cli(capsys, ["--log-level", "LOUD", "config", "tiny_cpu"])
    assert_one_line(code, err, "'LOUD'", "DEBUG, INFO, WARNING")


def test_log_level_is_case_insensitive(capsys):
    code, _ = run_cli(capsys, ["--log-level", "warning", "config", "tiny_cpu", "--hash"])
    assert code == 0


def test_yaml_syntax_error(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain:\n  seed: [1,\n")
    code, err = run_cli(capsys, ["config", str(bad)])
    assert_one_line(code, err, str(bad), "YAML syntax error at line 4", "fix the YAML")


def test_override_that_is_not_yaml(capsys):
    code, err = run_cli(capsys, ["config", "tiny_cpu", "--set", "train.seed=[1,"])
    assert_one_line(code, err, "train.seed=[1,", "quote it")


@pytest.mark.parametrize("key", ["checkpoint_every_steps", "log_every_steps"])
def test_zero_step_intervals_are_refused(key, capsys, tmp_path, tiny_checkpoints):
    # Before: accepted, then ZeroDivisionError after every model had loaded.
    code, err = run_cli(capsys, ["train", "--config", "tiny_cpu", "--set", f"checkpoints.root={tiny_checkpoints}",
                                 "--set", f"train.{key}=0", "--output", str(tmp_path / "run")])
    assert_one_line(code, err, f"train.{key}=0", ">= 1")


@pytest.mark.parametrize("command", ["generate", "train"])
def test_truncated_safetensors(command, capsys, tmp_path, tiny_copy):
    victim = tiny_copy / "base" / "diffusion_pytorch_model.safetensors"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    try:
        argv, _ = _commands(tiny_copy, tmp_path / "out")[command]
        code, err = run_cli(capsys, argv)
    finally:
        victim.write_bytes(data)
    assert_one_line(code, err, str(victim), "truncated", "make-tiny-checkpoints")


def test_submit_to_an_unreachable_host(capsys):
    from stream_r1.ops.seaweed import free_port

    host = f"http://127.0.0.1:{free_port()}"
    code, err = run_cli(capsys, ["pipeline", "submit", "--host", host, "--run-name", "x",
                                 "--param", "checkpoint_source=s3://b/c"])
    assert_one_line(code, err, host, "connection refused")


def test_submit_to_a_host_that_does_not_resolve(capsys):
    code, err = run_cli(capsys, ["pipeline", "submit", "--host", "http://no-such-host.invalid:8888",
                                 "--run-name", "x", "--param", "checkpoint_source=s3://b/c"])
    assert_one_line(code, err, "no-such-host.invalid", "does not resolve")


@pytest.mark.parametrize("run_id", ["../x", "Bad_Id", "a\nb: c"])
def test_invalid_run_id(run_id, capsys, tmp_path):
    code, err = run_cli(capsys, ["k8s-manifest", "--run-id", run_id, "-o", str(tmp_path / "j.yaml")])
    assert_one_line(code, err, repr(run_id), "lower-case letters")
    assert not (tmp_path / "j.yaml").exists()
