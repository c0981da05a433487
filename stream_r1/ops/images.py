"""The runtime images' Python contents: which distributions each image holds, pinned to the tested set.

Each image lists the distributions it needs by name in ``images/<name>/requirements.txt``. Their full
dependency closure (``Requires-Dist`` with markers, read from the environment the suite runs in) is pinned to
the versions installed here, with ``pyproject.toml``'s exact pins winning, so an image holds the same
releases the tests exercised. The same closure tells the component-image test what an image can import.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

IMAGES = ("ops", "train")
"""The runtime images: ``ops`` (CPU launchers and bookkeeping, no torch) and ``train`` (torch + the models)."""


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name (``Model_Registry`` -> ``model-registry``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def image_dir(root: Path, name: str) -> Path:
    """``images/<name>/`` of the checkout at ``root``.

    Raises:
        ValueError: ``name`` is not one of ``IMAGES``.
    """
    if name not in IMAGES:
        raise ValueError(f"unknown image {name!r}; choose one of {', '.join(IMAGES)}")
    return root / "images" / name


def requirement_names(root: Path, name: str) -> list[str]:
    """The distributions ``images/<name>/requirements.txt`` asks for (one name per line, ``#`` comments)."""
    lines = (image_dir(root, name) / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return [canonical(s) for s in (line.split("#", 1)[0].strip() for line in lines) if s]


def project_pins(root: Path) -> dict[str, str]:
    """Every ``name==version`` pin of ``pyproject.toml`` (core and all extras), by canonical name."""
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    out = {}
    for spec in specs:
        req = Requirement(spec)
        pinned = [s.version for s in req.specifier if s.operator == "=="]
        if pinned:
            out[canonical(req.name)] = pinned[0]
    return out


def closure(names: list[str]) -> dict[str, str]:
    """``names`` and everything they require here (markers evaluated for this interpreter), with versions.

    Raises:
        LookupError: a distribution in the closure is not installed in this environment.
    """
    env = default_environment()
    todo = [(canonical(n), frozenset[str]()) for n in names]
    seen: dict[str, set[str]] = {}
    versions: dict[str, str] = {}
    while todo:
        dist_name, extras = todo.pop()
        if dist_name in seen and extras <= seen[dist_name]:
            continue
        seen.setdefault(dist_name, set()).update(extras)
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError as e:
            raise LookupError(f"{dist_name} is needed by an image but not installed in {sys.prefix}; "
                              "run `bash scripts/dev.sh setup`") from e
        versions[dist_name] = dist.version
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is not None and not any(
                    req.marker.evaluate({**env, "extra": e}) for e in (seen[dist_name] or {""})):
                continue
            todo.append((canonical(req.name), frozenset(req.extras)))
    return versions


def image_pins(root: Path, name: str) -> dict[str, str]:
    """The exact versions image ``name`` installs: its closure, ``pyproject.toml`` pins first.

    Local version labels (``2.13.0+cpu``) are dropped: the wheelhouse decides the build (CPU or CUDA).
    """
    pins = project_pins(root)
    resolved = closure(requirement_names(root, name))
    return {d: pins.get(d, v.split("+", 1)[0]) for d, v in sorted(resolved.items())}


def import_names(dists: set[str]) -> set[str]:
    """Top-level import names the distributions ``dists`` provide (from their installed RECORD files)."""
    out = set()
    for top, owners in metadata.packages_distributions().items():
        if any(canonical(o) in dists for o in owners):
            out.add(top)
    return out
