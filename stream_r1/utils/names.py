"""Run ids: the one validator for every place a run id enters (CLI, pipeline parameter, launcher).

A run id names a Kubernetes job (``stream-r1-<run id>``), a directory on the runs PVC
(``/mnt/runs/<run id>``), an S3 prefix (``runs/<run id>/``) and a registered model version, and it is
written into generated YAML. So it must be a Kubernetes RFC 1035 label: lower-case letters, digits
and ``-``, starting with a letter, ending with a letter or digit. That also rules out path
separators, ``..``, whitespace and every YAML-significant character. Torch-free, stdlib only.
"""

from __future__ import annotations

import re

RUN_ID_PATTERN = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
"""RFC 1035 label (what the PyTorchJob webhook and Kubernetes Service names require)."""
MAX_RUN_ID_CHARS = 48
"""Pods are named ``<job>-master-0`` / ``<job>-node-0-0-xxxxx`` and host names stop at 63 characters."""


def suggest_run_id(raw: str) -> str:
    """A valid run id close to ``raw`` (lower-cased, other characters folded to ``-``), or ``""`` if none."""
    slug = re.sub(r"[^a-z0-9-]+", "-", raw.strip().lower())
    slug = re.sub(r"-{2,}", "-", slug).strip("-")
    if slug and not slug[0].isalpha():
        slug = "r-" + slug
    return slug[:MAX_RUN_ID_CHARS].rstrip("-")


def validate_run_id(run_id: str, setting: str = "run_id") -> str:
    """Return ``run_id`` unchanged when it is a valid run id, else fail naming it and a fix.

    Args:
        run_id: The id as the user gave it.
        setting: Where it was given (``--run-id``, ``--param run_id``, ...), named in the error.

    Raises:
        ValueError: not an RFC 1035 label of at most ``MAX_RUN_ID_CHARS`` characters.
    """
    if not isinstance(run_id, str):
        raise ValueError(f"{setting}={run_id!r} must be a string such as 'exp-1'")
    if len(run_id) <= MAX_RUN_ID_CHARS and RUN_ID_PATTERN.fullmatch(run_id):
        return run_id
    suggestion = suggest_run_id(run_id)
    hint = f" (e.g. {suggestion!r})" if suggestion else " (e.g. 'exp-1')"
    raise ValueError(
        f"{setting}={run_id!r} is not a valid run id: use 1-{MAX_RUN_ID_CHARS} lower-case letters, digits "
        f"and '-', starting with a letter and ending with a letter or digit{hint}"
    )
