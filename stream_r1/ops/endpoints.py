"""Pre-flight reachability of the services a command talks to (KFP API, S3), before any step runs.

A closed port or a misspelled host should cost seconds and one line, not minutes of client retries
and a stack of urllib3 tracebacks: one TCP connect with a short timeout tells the two apart from a
service that answers (whose own errors — bad keys, missing bucket — are checked by the caller).
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

DEFAULT_TIMEOUT_SECONDS = 5.0
"""One connect attempt; a reachable service on a LAN or the internet answers a SYN far faster."""


class UnreachableError(ConnectionError):
    """The service did not accept a TCP connection; the message names the URL, the reason and the fix."""


def host_port(url: str) -> tuple[str, int]:
    """``(host, port)`` of ``http(s)://host[:port]/...`` or ``host:port`` (default port by scheme).

    Raises:
        ValueError: no host in ``url``.
    """
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host; pass a URL such as http://127.0.0.1:8333")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port; pass a URL such as http://127.0.0.1:8333") from None
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def check_reachable(url: str, setting: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
    """Fail fast unless ``url``'s host accepts a TCP connection.

    Args:
        url: The service URL.
        setting: The option that set it (``--host``, ``--endpoint``), named in the error.
        timeout: Seconds for name resolution plus the connect.

    Raises:
        UnreachableError: the name does not resolve, the port is closed, or nothing answered in time.
        ValueError: ``url`` has no host.
    """
    host, port = host_port(url)
    start = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except socket.gaierror as e:
        reason = f"the host name {host!r} does not resolve ({e.strerror})"
    except ConnectionRefusedError:
        reason = f"nothing listens on port {port} of {host} (connection refused)"
    except TimeoutError:
        reason = f"no answer from {host}:{port} within {time.monotonic() - start:.0f} s"
    except OSError as e:
        reason = f"{host}:{port} is unreachable ({e.strerror or e})"
    raise UnreachableError(f"{setting} {url}: {reason}; check the URL and that the service is running")
