"""Each component sits on an image that can run it.

What a component needs is derived from what it runs, by reading the code (AST), never from a list kept
beside it: the ``stream_r1.ops.steps`` functions its body calls and the steps functions those call, their
lazy imports, the ``stream-r1`` subcommands they start (``run_cli([...])``), the modules a subprocess runs
(``-m torch.distributed.run``), and the whole import closure of every project module reached (imports at any
depth, so a lazy ``import torch`` inside a function counts). What an image can import is the dependency
closure of ``images/<name>/requirements.txt`` (``stream_r1.ops.images``, the set the image is built from).
"""

from __future__ import annotations

import ast
import importlib.util
import itertools
import sys
from functools import cache
from pathlib import Path

import pytest

from stream_r1.ops import images

REPO = Path(__file__).resolve().parents[2]
COMPONENTS = sorted(p.parent.name for p in (REPO / "components").glob("*/component.py"))
IMAGE_OF_CONSTANT = {"STREAM_R1_OPS_IMAGE": "ops", "STREAM_R1_TRAIN_IMAGE": "train"}
IN_PROCESS_BACKENDS = {"local"}
"""``backend=local`` trains inside the step's own process: the in-process runner's (``run-local``, the host
venv, which has torch). In an image the launcher gets ``container``/``pytorchjob``/``trainjob`` and the training
runs in the train image; ``steps.train`` refuses ``local`` where torch is missing."""
STDLIB = set(sys.stdlib_module_names)
OPTIONAL_EXTRAS = ("gpu", "deepspeed")
"""pyproject extras a config switches on (``attention_backend: flash`` on CUDA builds of the train image, the
ZeRO strategy with ``--build-arg INSTALL_DEEPSPEED=1``). Imported lazily where selected, with a teaching error
when missing, so an image without them runs every default config."""


def _tree(module: str) -> ast.Module | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return ast.parse(Path(spec.origin).read_text(encoding="utf-8"))


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _imports(nodes: list[ast.AST], package: str) -> set[str]:
    """Absolute module names imported anywhere inside ``nodes`` (``from a import b`` adds ``a.b`` if a module),
    plus the modules a ``[..., "-m", "x.y", ...]`` command runs when ``nodes`` start subprocesses (a command
    handed to a container engine runs in another image, not here)."""
    out: set[str] = set()
    spawns = any(isinstance(n, (ast.Import, ast.ImportFrom)) and "subprocess" in
                 ([a.name for a in n.names] if isinstance(n, ast.Import) else [n.module])
                 for root in nodes for n in ast.walk(root))
    for root in nodes:
        for n in ast.walk(root):
            if isinstance(n, ast.Import):
                out.update(a.name for a in n.names)
            elif isinstance(n, ast.ImportFrom) and n.module != "__future__":
                base = n.module or ""
                if n.level:
                    parent = package.rsplit(".", n.level - 1)[0] if n.level > 1 else package
                    base = f"{parent}.{base}" if base else parent
                out.add(base)
                out.update(f"{base}.{a.name}" for a in n.names if base.startswith("stream_r1")
                           and _is_module(f"{base}.{a.name}"))
            elif spawns and isinstance(n, (ast.List, ast.Tuple)):  # [python, "-m", "torch.distributed.run", ...]
                for a, b in itertools.pairwise(n.elts):
                    if isinstance(a, ast.Constant) and a.value == "-m" and isinstance(b, ast.Constant):
                        out.add(str(b.value))
    return out


@cache
def module_closure(module: str) -> frozenset[str]:
    """Top-level external packages ``module`` needs, through every project module it imports (any depth)."""
    external: set[str] = set()
    seen: set[str] = set()
    todo = [module]
    while todo:
        mod = todo.pop()
        parts = mod.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first
            name = ".".join(parts[:i])
            if name in seen:
                continue
            seen.add(name)
            if parts[0] != "stream_r1":
                external.add(parts[0])
                break
            tree = _tree(name)
            if tree is not None:
                is_pkg = importlib.util.find_spec(name).submodule_search_locations is not None
                todo.extend(_imports([tree], name if is_pkg else name.rsplit(".", 1)[0]))
    return frozenset(external - STDLIB)


STEPS = "stream_r1.ops.steps"


def _steps_functions() -> dict[str, ast.FunctionDef]:
    tree = _tree(STEPS)
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def _cli_subcommands(func: ast.FunctionDef) -> set[str]:
    """First words of ``run_cli([...])`` calls (or of the list a name passed to it was bound to), e.g.
    ``ode-pairs`` -> module ``stream_r1.commands.ode_pairs``."""
    bound = {t.id: n.value for n in ast.walk(func) if isinstance(n, ast.Assign) for t in n.targets
             if isinstance(t, ast.Name)}
    out = set()
    for n in ast.walk(func):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "run_cli" and n.args:
            first = n.args[0]
            if isinstance(first, ast.Name):
                first = bound.get(first.id, first)
            if isinstance(first, ast.List) and first.elts and isinstance(first.elts[0], ast.Constant):
                out.add(str(first.elts[0].value))
    return out


def _backend_branches(func: ast.FunctionDef) -> dict[str, set[str]]:
    """``make_backend``'s imports by backend name: ``if name == "x":`` / ``if name in ("y", "z"):`` bodies."""
    out: dict[str, set[str]] = {}
    for n in ast.walk(func):
        if isinstance(n, ast.If) and isinstance(n.test, ast.Compare):
            right = n.test.comparators[0]
            names = ([right.value] if isinstance(right, ast.Constant)
                     else [e.value for e in getattr(right, "elts", []) if isinstance(e, ast.Constant)])
            for name in names:
                out.setdefault(str(name), set()).update(_imports(n.body, "stream_r1.ops"))
    return out


def requirements(component: str, *, backends_excluded: set[str] = IN_PROCESS_BACKENDS) -> set[str]:
    """External top-level packages the ``component`` needs at run time (see the module docstring)."""
    tree = ast.parse((REPO / "components" / component / "component.py").read_text(encoding="utf-8"))
    (func,) = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    funcs = _steps_functions()
    called = {n.func.attr for n in ast.walk(func) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
              and isinstance(n.func.value, ast.Name) and n.func.value.id == "steps"}
    modules = {STEPS, "kfp"}  # the KFP executor (install_kfp_package=False) and the steps module itself
    todo, seen = sorted(called), set()
    while todo:
        name = todo.pop()
        if name in seen or name not in funcs:
            continue
        seen.add(name)
        body = funcs[name]
        if name == "make_backend":
            for backend, mods in _backend_branches(body).items():
                if backend not in backends_excluded:
                    modules |= mods
        else:
            modules |= {m for m in _imports(body.body, "stream_r1.ops") if m != STEPS}
        for sub in _cli_subcommands(body):
            modules |= {"stream_r1.cli", f"stream_r1.commands.{sub.replace('-', '_')}"}
        todo += [n.func.id for n in ast.walk(body) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    # The steps module's own top-level imports load for every component; the functions' lazy ones only when used.
    steps_tree = _tree(STEPS)
    top_level = _imports([n for n in steps_tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], "stream_r1.ops")
    out: set[str] = set()
    for mod in (modules - {STEPS}) | top_level:
        out |= module_closure(mod)
    return out


def component_image(component: str) -> str:
    tree = ast.parse((REPO / "components" / component / "component.py").read_text(encoding="utf-8"))
    (func,) = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    kw = {k.arg: k.value for k in func.decorator_list[0].keywords}
    return IMAGE_OF_CONSTANT[ast.unparse(kw["base_image"])]


@cache
def optional_imports() -> frozenset[str]:
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    dists = {images.canonical(images.Requirement(s).name) for e in OPTIONAL_EXTRAS for s in extras[e]}
    # not installed here (flash-attn builds only against CUDA): its import name is its distribution name
    return frozenset(images.import_names(dists) | {d.replace("-", "_") for d in dists})


@cache
def image_provides(name: str) -> frozenset[str]:
    return frozenset(images.import_names(set(images.image_pins(REPO, name))) | {"stream_r1"} | optional_imports())


@pytest.mark.parametrize("component", COMPONENTS)
def test_component_sits_on_an_image_that_can_run_it(component):
    image = component_image(component)
    missing = requirements(component) - image_provides(image)
    assert not missing, f"components/{component} runs on the {image} image, which lacks {sorted(missing)}"


def test_the_analysis_sees_what_each_step_really_runs():
    """The derivation is not vacuous: it finds the model stack where the model runs and nowhere else."""
    assert len(COMPONENTS) == 8
    torch_steps = {c for c in COMPONENTS if "torch" in requirements(c)}
    assert torch_steps == {"evaluate", "ode_init"}
    assert {"diffusers", "transformers"} <= requirements("evaluate")
    assert "huggingface_hub" in requirements("fetch_checkpoints")  # hf:// sources
    assert "kubernetes" in requirements("train") and "mlflow" in requirements("register_model")
    assert "torch" not in requirements("validate_run")  # the first step runs before any GPU exists
    # backend=local would train inside the launcher's process: torch, which the ops image does not have.
    assert "torch" in requirements("train", backends_excluded=set())
    assert "docker" in requirements("train")  # backend=container starts the job through the Docker API
    assert "torch" not in image_provides("ops") and "torch" in image_provides("train")
    for component in COMPONENTS:
        wanted = "train" if component in torch_steps else "ops"
        assert component_image(component) == wanted, component


def test_images_pin_what_pyproject_pins():
    pins = images.project_pins(REPO)
    for name in images.IMAGES:
        resolved = images.image_pins(REPO, name)
        assert set(images.requirement_names(REPO, name)) <= set(resolved)
        for dist, version in resolved.items():
            if dist in pins:
                assert version == pins[dist], (name, dist)
    assert "torch" not in images.image_pins(REPO, "ops")
