"""What ``stream-r1 pipeline run-local`` trains on: the tiny random checkpoints or the shapes world.

``tiny`` is the unit tests' random checkpoint set (``make-tiny-checkpoints``): every step runs, nothing is learnt.
``shapes`` is the synthetic world of docs/shapes.md, whose VAE, teacher, VideoReward and ODE initialisation are
trained here (``stream-r1 shapes build``, cached by content hash, so only the first run pays for the build) and
whose videos have a ground truth: evaluation adds the world's ``gt_*`` scores, the gate compares ``gt_total``
and the student starts from the world's ODE initialisation.

Only the host-side ``run-local`` uses this module; the torch-dependent world code is imported when a world is
built, never by the pipeline's step images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORLDS: tuple[str, ...] = ("tiny", "shapes")
"""Checkpoint sets ``run-local`` can train on."""
SHAPES_EVAL_PROMPTS = "package:stream_r1/shapes/prompts/held_out.txt"
"""The world's held-out prompts (never seen by the teacher, the reward or the student), inside the package so
that a step in its image reads the same file."""


@dataclass(frozen=True, slots=True)
class LocalWorld:
    """One checkpoint set for a local run.

    Attributes:
        name: ``tiny`` or ``shapes``.
        source: The directory the fetch step reads (built by :func:`materialize`).
        config: The preset a run uses when the user names none.
        params: Pipeline arguments the world implies (the user's ``--param`` values win).
        size: The shapes world's build size (``ci`` or ``default``); '' for ``tiny``.
    """

    name: str
    source: Path
    config: str
    params: dict[str, Any] = field(default_factory=dict)
    size: str = ""


def local_world(name: str, workdir: Path, size: str = "ci") -> LocalWorld:
    """The world ``name`` under ``workdir`` (nothing is built yet).

    Raises:
        ValueError: An unknown world or shapes size (one line naming the choices).
    """
    if name not in WORLDS:
        raise ValueError(f"--world {name!r} is not one of {', '.join(WORLDS)}")
    if name == "tiny":
        return LocalWorld("tiny", workdir / "tiny-checkpoints", "tiny_cpu")
    from stream_r1.shapes.build import size_overrides
    from stream_r1.shapes.sizes import get_size

    ws = get_size(size)  # ValueError names the sizes
    source = workdir / f"shapes-world-{ws.name}"
    # The world's geometry (latent frames and side); checkpoints.root is set by every step to the fetched set.
    overrides = [o for o in size_overrides(ws, source) if not o.startswith("checkpoints.root=")]
    params = {"eval_prompts": SHAPES_EVAL_PROMPTS, "gate_metric": "gt_total", "ode_init_path": "ode_init.pt",
              "overrides": overrides}
    return LocalWorld("shapes", source, "shapes_cpu", params, ws.name)


def run_arguments(world: LocalWorld, params: dict[str, Any]) -> dict[str, Any]:
    """The world's pipeline arguments with the user's ``params`` on top (their ``overrides`` after the world's)."""
    merged = {**world.params, **params}
    if "overrides" in world.params and "overrides" in params:
        merged["overrides"] = [*world.params["overrides"], *params["overrides"]]
    return merged


def materialize(world: LocalWorld, run_cli: Callable[[list[str]], None]) -> None:
    """Build (or verify) ``world.source`` with the project's own CLI (``run_cli``: ``stream_r1.ops.steps.run_cli``,
    which streams the command's output into the run log); a complete, current set is left as it is."""
    if world.name == "tiny":
        run_cli(["make-tiny-checkpoints", str(world.source)])  # verified; rebuilt when damaged
    else:
        run_cli(["shapes", "build", str(world.source), "--size", world.size])  # cached by content hash
