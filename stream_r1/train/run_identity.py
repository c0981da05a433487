"""Which run an output directory (or a checkpoint) belongs to: the *training trajectory*, not the spelling.

Resuming continues a trajectory bit for bit, so the identity is everything that changes what is
computed, and nothing else:

- the whole resolved config **except** the settings listed in :data:`FREE_ON_RESUME` (how long to
  train, how often to checkpoint/log, how many checkpoints to keep, evaluation and ODE-stage settings,
  the run's name, the embedding-cache location);
- the weights by **content**, not by path: for each weight file the training reads, its path relative
  to the weight's ``checkpoints.*`` entry, its size and the sha256 of its first and last MiB (a stat and
  two small reads per file, also for a 14B teacher). ``checkpoints.root=/abs/path`` or a copy of the same
  files elsewhere is the same run; other weights are not;
- the prompts by content (sha256 of the prompt file), not by path.

The identity is written as ``<output>/run_identity.json`` when a run starts and its hash goes into
every checkpoint's ``trainer_state.json`` (``trajectory_hash``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from stream_r1.config import config_to_dict
from stream_r1.config.schema import RunConfig
from stream_r1.utils.io import atomic_write_json, package_path, sha256_file

RUN_IDENTITY_FILE = "run_identity.json"

FREE_ON_RESUME: tuple[str, ...] = (
    "name",
    "train.num_optimizer_steps",
    "train.keep_last_checkpoints",
    "train.checkpoint_every_steps",
    "train.log_every_steps",
    "data.prompts",
    "data.embedding_cache",
    "checkpoints",
    "eval",
    "ode",
)
"""Config entries left out of the identity. ``data.prompts`` and ``checkpoints`` are replaced by the
content fingerprints of the files they name; the train.* cadences do not touch the numbers (a run
killed at any step and resumed is bitwise identical to an uninterrupted one); ``eval``/``ode`` settings
are not read by the distillation stage; the embedding cache is keyed by content."""

_EDGE_BYTES = 1 << 20


def _file_fingerprint(path: Path) -> list[Any]:
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(_EDGE_BYTES))
        if size > 2 * _EDGE_BYTES:
            f.seek(size - _EDGE_BYTES)
            h.update(f.read(_EDGE_BYTES))
        elif size > _EDGE_BYTES:
            h.update(f.read())
    return [size, h.hexdigest()]


def weights_fingerprint(path: str | Path) -> dict[str, Any] | str:
    """``{relative file: [size, sha256 of first+last MiB]}`` of a weight file or directory (``"missing"`` if absent).

    Hidden files (``.``-prefixed: caches, in-progress temporaries) are skipped.
    """
    path = Path(path)
    if path.is_file():
        return {path.name: _file_fingerprint(path)}
    if not path.is_dir():
        return "missing"
    return {p.relative_to(path).as_posix(): _file_fingerprint(p) for p in sorted(path.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)}


def _drop(tree: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for k in parents:
        node = node.get(k, {})
    node.pop(leaf, None)


def trajectory_identity(cfg: RunConfig, weights: dict[str, Path]) -> dict[str, Any]:
    """The identity of a training run (see the module docstring) as a JSON-ready dict.

    Args:
        cfg: The run config.
        weights: ``{checkpoints.* name: resolved path}`` of the weights the run reads.
    """
    config = config_to_dict(cfg)
    for dotted in FREE_ON_RESUME:
        _drop(config, dotted)
    prompts = package_path(cfg.data.prompts)
    return {
        "config": config,
        "weights": {name: weights_fingerprint(p) for name, p in sorted(weights.items())},
        "prompts_sha256": sha256_file(prompts) if prompts.is_file() else "missing",
    }


def identity_hash(identity: dict[str, Any]) -> str:
    """sha256 (first 16 hex digits) of the identity's canonical JSON."""
    blob = json.dumps(identity, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: tree}


def describe_difference(old: dict[str, Any], new: dict[str, Any], limit: int = 4) -> str:
    """The entries two identities disagree on, e.g. ``config.optim.lr_generator (0.0001 -> 0.0002)``."""
    a, b = _flatten(old), _flatten(new)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    parts = []
    for k in keys:
        if k.startswith("weights."):
            name = k.split(".")[1]
            item = f"the files of checkpoints.{name}"
        elif k == "prompts_sha256":
            item = "the content of data.prompts"
        else:
            item = f"{k.removeprefix('config.')} ({a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r})"
        if item not in parts:
            parts.append(item)
    shown = ", ".join(parts[:limit]) + (f" and {len(parts) - limit} more" if len(parts) > limit else "")
    return shown or "nothing visible (an identity written by another version)"


def read_identity(output_dir: str | Path) -> dict[str, Any] | None:
    """``<output>/run_identity.json`` (``{"hash", "identity"}``) or None when the run predates it."""
    path = Path(output_dir) / RUN_IDENTITY_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def write_identity(output_dir: str | Path, identity: dict[str, Any]) -> Path:
    """Atomically write ``<output>/run_identity.json``."""
    return atomic_write_json(Path(output_dir) / RUN_IDENTITY_FILE,
                             {"hash": identity_hash(identity), "identity": identity})


RESUME_RULE = (
    "A run directory is continued (--resume) only by the same training trajectory: the resolved config "
    "except name, train.num_optimizer_steps, train.keep_last_checkpoints, train.checkpoint_every_steps, "
    "train.log_every_steps, data.embedding_cache, eval.* and ode.*; the weights by "
    "content (checkpoints.* may name the same files by another path, e.g. an absolute checkpoints.root); "
    "the prompts by content. So extending a run (train.num_optimizer_steps) or keeping more checkpoints "
    "resumes; a different learning rate, model or weight file is refused as a different run."
)
"""The rule in one paragraph (``stream-r1 train --help`` prints it)."""
