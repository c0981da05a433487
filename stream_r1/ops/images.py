"""The runtime images' Python contents: which distributions each image holds, pinned to the tested set.

Each image lists the distributions it needs by name in ``images/<name>/requirements.txt``. Their full
dependency closure (``Requires-Dist`` with markers, read from the environment the suite runs in) is pinned to
the versions installed here, with ``pyproject.toml``'s exact pins winning, so an image holds the same
releases the tests exercised. The same closure tells the component-image test what an image can import.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

from stream_r1.utils.logging import get_logger

log = get_logger(__name__)

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


# --- building the images (podman) ------------------------------------------------------------------------

SOURCE_INPUTS = ("pyproject.toml", "README.md", "stream_r1")
"""What the project wheel is built from (part of every image's input hash)."""


@dataclass(frozen=True)
class BuiltImage:
    """One image after ``build_image``: its tag, input hash and whether it was (re)built now."""

    name: str
    tag: str
    inputs: str
    built: bool
    seconds: float


def image_tag(root: Path, name: str) -> str:
    """The image's pinned name, from its Dockerfile's ``io.stream-r1.image`` label (tests keep it equal to
    ``components/_shared/images.py``, so the compiled pipeline's images resolve to what was built here)."""
    text = (image_dir(root, name) / "Dockerfile").read_text(encoding="utf-8")
    match = re.search(r'io\.stream-r1\.image="([^"]+)"', text)
    if not match:
        raise ValueError(f"images/{name}/Dockerfile has no io.stream-r1.image label")
    return match.group(1)


def _wheel_key(filename: str) -> tuple[str, str]:
    dist, version = filename.split("-")[:2]
    return canonical(dist), version.split("+", 1)[0]


def fill_wheelhouse(lock: str, wheels: Path) -> list[Path]:
    """The wheels for every line of ``lock`` in ``wheels`` (a cache shared by the images): missing ones are
    fetched or built once by ``pip wheel --no-deps`` on this host (pip cannot reach the index inside builds).

    Returns:
        The wheel files of ``lock``, one per line.

    Raises:
        RuntimeError: pip failed, or a pinned wheel is still missing afterwards.
    """
    wheels.mkdir(parents=True, exist_ok=True)
    wanted = dict(line.split("==") for line in lock.split())

    def have() -> dict[str, Path]:
        out = {}
        for f in wheels.glob("*.whl"):
            dist, version = _wheel_key(f.name)
            if wanted.get(dist) == version:
                out[dist] = f
        return out

    missing = sorted(set(wanted) - set(have()))
    if missing:
        log.info("wheelhouse: fetching %d wheels into %s", len(missing), wheels)
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                               *(f"{d}=={wanted[d]}" for d in missing)], text=True, capture_output=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError("pip wheel failed:\n" + "\n".join(proc.stderr.strip().splitlines()[-15:]))
    found = have()
    still = sorted(set(wanted) - set(found))
    if still:
        raise RuntimeError(f"wheelhouse {wheels} lacks {still} after pip wheel")
    return [found[d] for d in sorted(wanted)]


def git_revision(root: Path) -> str:
    """The checkout's commit (the image's ``org.opencontainers.image.revision``), ``unknown`` outside git."""
    proc = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], text=True, capture_output=True, check=False)
    return proc.stdout.strip() or "unknown"


def source_digest(root: Path) -> str:
    """sha256 over the project's source files (paths and bytes), ignoring caches."""
    h = hashlib.sha256()
    for item in SOURCE_INPUTS:
        path = root / item
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()
                                                       and "__pycache__" not in p.parts and p.suffix != ".pyc")
        for f in files:
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def build_image(root: Path, name: str, *, cache: Path, base_image: str, python: str = "python3",
                extra_wheels: Path | None = None, force: bool = False) -> BuiltImage:
    """Build image ``name`` with podman from a hermetic context, unless an image with the same inputs exists.

    The context is ``wheels/`` (the lock's wheels plus ``requirements.lock``; ``extra_wheels`` replace
    same-named ones, e.g. the CUDA torch and flash-attn of a release build) and ``project/`` (the project's
    wheel). The input hash covers the Dockerfile, the lock, the base image, the extra wheels and the sources;
    it is stored as the image label ``io.stream-r1.inputs``.
    """
    from stream_r1.ops import podman

    start = time.monotonic()
    tag = image_tag(root, name)
    dockerfile = image_dir(root, name) / "Dockerfile"
    extras = sorted(extra_wheels.glob("*.whl")) if extra_wheels else []
    extra_pins = dict(_wheel_key(f.name) for f in extras)
    pins = {**image_pins(root, name), **extra_pins}  # extras replace same-named pins or add distributions
    lock = "".join(f"{d}=={v}\n" for d, v in sorted(pins.items()))
    h = hashlib.sha256()
    for part in (dockerfile.read_bytes(), lock.encode(), base_image.encode(), python.encode(),
                 source_digest(root).encode()):
        h.update(part + b"\0")
    for f in extras:
        h.update(f.name.encode() + str(f.stat().st_size).encode())
    inputs = h.hexdigest()[:16]
    labels = podman.image_labels(tag)
    if not force and labels is not None and labels.get("io.stream-r1.inputs") == inputs:
        log.info("image %s is up to date (inputs %s)", tag, inputs)
        return BuiltImage(name, tag, inputs, False, time.monotonic() - start)
    wheel_files = fill_wheelhouse("".join(f"{d}=={v}\n" for d, v in sorted(pins.items()) if d not in extra_pins),
                                  cache / "wheels")
    context = cache / "context" / name
    shutil.rmtree(context, ignore_errors=True)
    (context / "wheels").mkdir(parents=True)
    (context / "project").mkdir()
    for f in [*wheel_files, *extras]:
        os.link(f, context / "wheels" / f.name) if f.stat().st_dev == context.stat().st_dev \
            else shutil.copy2(f, context / "wheels" / f.name)
    (context / "wheels" / "requirements.lock").write_text(lock, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(context / "project"), str(root)], text=True, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError("building the project wheel failed:\n" + proc.stderr[-2000:])
    podman.build(context, dockerfile, tag, {"BASE_IMAGE": base_image, "PYTHON": python, "REVISION": git_revision(root)},
                 {"io.stream-r1.inputs": inputs})
    return BuiltImage(name, tag, inputs, True, time.monotonic() - start)


def smoke_test(root: Path, name: str) -> list[str]:
    """Run the built image ``name``: its default command, ``stream-r1 --help``, the uid, every top-level module of
    its requirements and the modules of the steps that run on it. Returns the problems (empty = passed)."""
    from stream_r1.ops import podman

    tag = image_tag(root, name)
    problems = []
    default = podman.run(tag)
    if default.returncode != 0 or "usage: stream-r1" not in default.stdout:
        problems.append(f"{tag}: the default command failed ({default.returncode}): {default.stderr[-300:]}")
    cli = podman.run(tag, "stream-r1", "--help")
    if cli.returncode != 0 or "pipeline" not in cli.stdout:
        problems.append(f"{tag}: `stream-r1 --help` failed ({cli.returncode}): {cli.stderr[-300:]}")
    uid = podman.run(tag, "id", "-u")
    if uid.stdout.strip() in ("", "0"):
        problems.append(f"{tag}: runs as uid {uid.stdout.strip() or '?'}; the image user must be non-root")
    modules = sorted(import_names(set(requirement_names(root, name))) - {"__editable__"})
    modules += list(SMOKE_MODULES[name])
    code = ("import importlib, sys\n"
            f"for m in {modules!r}:\n    importlib.import_module(m)\n"
            f"assert ('torch' in sys.modules) == {name == 'train'}, 'torch presence'\nprint('ok', len({modules!r}))")
    imp = podman.run(tag, "python", "-c", code)
    if imp.returncode != 0 or not imp.stdout.startswith("ok"):
        problems.append(f"{tag}: imports failed: {(imp.stderr or imp.stdout).strip().splitlines()[-1:]}")
    labels = podman.image_labels(tag) or {}
    for key in ("org.opencontainers.image.source", "org.opencontainers.image.revision",
                "org.opencontainers.image.version"):
        if not labels.get(key):
            problems.append(f"{tag}: label {key} is missing")
    return problems


SMOKE_MODULES = {
    "ops": ("stream_r1.ops.steps", "stream_r1.ops.k8s.launcher", "stream_r1.ops.registry.mlflow_registry",
            "stream_r1.ops.registry.kubeflow", "kfp.dsl.executor_main"),
    "train": ("stream_r1.ops.steps", "stream_r1.models", "stream_r1.eval", "stream_r1.commands.evaluate",
              "kfp.dsl.executor_main"),
}
"""Project modules each image's steps load (beyond its requirements' top-level modules)."""
