"""The container engine: podman from Debian's packages (rootful, runc), driven through its CLI.

One place knows the engine's commands and what to tell a person when it is missing: ``require`` returns
nothing or raises one line naming what to install (``bash scripts/dev.sh containers`` sets it all up).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from stream_r1.utils.logging import get_logger

log = get_logger(__name__)

LOCAL_BASE = "localhost/stream-r1/debian:bookworm"
"""The base image bootstrapped here (no registry is reachable): Debian bookworm minbase, Python 3.11."""
SETUP_HINT = "run `sudo bash scripts/dev.sh containers` (apt-get install podman runc debootstrap + containers.conf)"


class EngineMissing(RuntimeError):
    """podman (or a tool it needs) is not usable here; the message says how to get it."""


def require(*tools: str) -> None:
    """Raise ``EngineMissing`` unless every tool (default: podman and runc) is on PATH."""
    for tool in tools or ("podman", "runc"):
        if shutil.which(tool) is None:
            raise EngineMissing(f"{tool} is not installed; {SETUP_HINT}")


def podman(*args: str, check: bool = True, capture: bool = True, **kwargs: object) -> subprocess.CompletedProcess:
    """Run ``podman ARGS``; a failure raises ``RuntimeError`` with podman's last output lines."""
    require("podman")
    proc = subprocess.run(["podman", *args], text=True, capture_output=capture, check=False, **kwargs)  # type: ignore[call-overload]
    if check and proc.returncode != 0:
        tail = "\n".join(((proc.stdout or "") + (proc.stderr or "")).strip().splitlines()[-20:])
        raise RuntimeError(f"`podman {' '.join(args[:3])} ...` exited with {proc.returncode}:\n{tail}")
    return proc


def image_labels(tag: str) -> dict[str, str] | None:
    """Labels of the local image ``tag``, or None when there is no such image."""
    if podman("image", "exists", tag, check=False).returncode != 0:
        return None
    info = json.loads(podman("image", "inspect", tag).stdout)
    return dict((info[0].get("Config") or {}).get("Labels") or info[0].get("Labels") or {})


def ensure_local_base(tag: str = LOCAL_BASE) -> str:
    """``tag``, bootstrapped once: ``debootstrap --variant=minbase bookworm`` then ``podman import`` (~1-2 min).

    Raises:
        EngineMissing: debootstrap or podman is missing, or not root (debootstrap needs it).
    """
    if image_labels(tag) is not None:
        return tag
    require("podman", "debootstrap")
    if os.geteuid() != 0:
        raise EngineMissing(f"bootstrapping {tag} needs root (debootstrap); {SETUP_HINT}, then rerun as root")
    with tempfile.TemporaryDirectory(prefix="stream-r1-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        log.info("debootstrap --variant=minbase bookworm %s", rootfs)
        start = time.monotonic()
        proc = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs)], text=True,
                              capture_output=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError("debootstrap failed:\n" + "\n".join([*proc.stdout.splitlines()[-10:], proc.stderr]))
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        podman("import", "--change", "CMD /bin/bash", "-", tag, stdin=tar.stdout)
        tar.wait()
        log.info("base image %s bootstrapped in %.0f s", tag, time.monotonic() - start)
    return tag


def build(context: Path, dockerfile: Path, tag: str, build_args: dict[str, str], labels: dict[str, str]) -> None:
    """``podman build --network host`` of ``dockerfile`` in ``context`` as ``tag`` (output streamed to the log)."""
    args = ["build", "--network", "host", "-f", str(dockerfile), "-t", tag]
    for k, v in sorted(build_args.items()):
        args += ["--build-arg", f"{k}={v}"]
    for k, v in sorted(labels.items()):
        args += ["--label", f"{k}={v}"]
    require("podman")
    log.info("podman %s %s", " ".join(args), context)
    proc = subprocess.Popen(["podman", *args, str(context)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:
        log.debug("[podman build] %s", line.rstrip())
        tail = [*tail, line.rstrip()][-25:]
    if proc.wait() != 0:
        raise RuntimeError(f"podman build of {tag} failed:\n" + "\n".join(tail))


def run(tag: str, *command: str, network_host: bool = False) -> subprocess.CompletedProcess:
    """``podman run --rm TAG COMMAND`` (captured; never raises for a non-zero exit)."""
    return podman("run", "--rm", *(["--network", "host"] if network_host else []), tag, *command, check=False)


def serve_socket(sock: Path, timeout_s: float = 30.0) -> subprocess.Popen:
    """Start ``podman system service --time=0 unix://SOCK`` (its Docker-compatible API) and wait for the socket.

    Raises:
        RuntimeError: the service exited or the socket did not appear within ``timeout_s``.
    """
    require("podman")
    sock.parent.mkdir(parents=True, exist_ok=True)
    if sock.exists():
        sock.unlink()
    proc = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while not sock.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"podman system service exited with {proc.returncode}: {proc.stderr.read()[-500:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"podman system service did not create {sock} within {timeout_s:.0f} s")
        time.sleep(0.1)
    return proc
