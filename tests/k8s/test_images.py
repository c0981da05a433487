"""images/: the Dockerfiles are linted (they are also built and run: tests/mlops/test_pipeline_containers.py),
and the image tags are checked to agree across images/, components/, manifests/ and the launcher's default."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

import stream_r1
from stream_r1.ops.k8s.launcher import DEFAULT_TRAIN_IMAGE

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "images").glob("*/Dockerfile"))
SECRET_NAME = re.compile(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL)", re.I)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        buf += " " + stripped.rstrip("\\").strip() if buf else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            op, _, args = buf.partition(" ")
            out.append((op.upper(), args.strip()))
            buf = ""
    return out


def lint(text: str) -> list[str]:
    """Problems of one Dockerfile: unpinned bases, root final user, credentials in ENV/ARG, torchvision."""
    problems, stages, arg_defaults = [], set(), {}
    ins = instructions(text)
    for op, args in ins:
        if op == "ARG" and "=" in args:
            name, _, default = args.partition("=")
            arg_defaults[name.strip()] = default.strip()
        if op == "FROM":
            parts = args.split()
            image = next(p for p in parts if not p.startswith("--"))
            # FROM ${BASE_IMAGE}: the default is what an upstream build uses, so that is what must be pinned
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: arg_defaults.get(m.group(1), m.group(0)), image)
            if image in stages:
                continue
            if "@sha256:" not in image:
                name_tag = image.rsplit("/", 1)[-1]
                if ":" not in name_tag or name_tag.endswith(":latest"):
                    problems.append(f"base image {image!r} is not pinned (use a tag other than latest, or a digest)")
            if len(parts) >= 3 and parts[-2].upper() == "AS":
                stages.add(parts[-1])
        if op in ("ENV", "ARG"):
            for m in re.finditer(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(\S+)", args):
                if SECRET_NAME.search(m.group(1)) and m.group(2) not in ('""', "''"):
                    problems.append(f"{op} {m.group(1)} carries a credential; pass secrets at run time")
        if "torchvision" in args:
            problems.append("torchvision must never be installed (PyPI's build does not import beside torch 2.13.0)")
    users = [args for op, args in ins if op == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the final USER must be a non-root user")
    return problems


def _labels(text: str) -> dict[str, str]:
    labels = {}
    for op, args in instructions(text):
        if op == "LABEL":
            labels.update(dict(re.findall(r'([\w.\-]+)="([^"]*)"', args)))
    return labels


def _image_constants() -> dict[str, str]:
    path = ROOT / "components" / "_shared" / "images.py"
    tree = ast.parse(path.read_text())
    return {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
            for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}


def test_dockerfiles_exist_and_pass_lint():
    names = {p.parent.name for p in DOCKERFILES}
    assert {"train", "ops"} <= names
    for path in DOCKERFILES:
        assert lint(path.read_text()) == [], path


def test_linter_catches_bad_dockerfiles():
    bad = ("FROM python:latest\nFROM ubuntu\nENV AWS_SECRET_ACCESS_KEY=abc123\n"
           "RUN pip install torchvision\nUSER root\n")
    problems = " | ".join(lint(bad))
    for needle in ("python:latest", "'ubuntu'", "AWS_SECRET_ACCESS_KEY", "torchvision", "non-root"):
        assert needle in problems
    assert lint("FROM a:1 AS build\nFROM build\nUSER 1000:1000\n") == []
    assert lint("FROM a@sha256:" + "0" * 64 + "\nUSER app\n") == []


def test_linter_resolves_the_base_image_argument():
    assert lint("ARG BASE_IMAGE=debian:bookworm-slim\nFROM ${BASE_IMAGE}\nUSER 1000:1000\n") == []
    assert "not pinned" in " ".join(lint("ARG BASE_IMAGE=debian\nFROM ${BASE_IMAGE}\nUSER 1000:1000\n"))


@pytest.mark.parametrize("name", ["ops", "train"])
def test_images_build_hermetically_from_a_base_argument(name):
    """Same shape for both images: an overridable base, only the wheelhouse as a package source, a numeric
    non-root user, the OCI labels. The CUDA release differs only in the build arguments and the wheels."""
    ins = instructions((ROOT / "images" / name / "Dockerfile").read_text())
    args = [a for op, a in ins if op == "ARG"]
    assert args[0].startswith("BASE_IMAGE=") and [a for op, a in ins if op == "FROM"] == ["${BASE_IMAGE}"]
    pip = [a for op, a in ins if op == "RUN" and "pip install" in a]
    assert pip and all(seg.count("--no-index") == 1 for a in pip for seg in a.split("&&") if "pip install" in seg)
    assert "--find-links /wheels -r /wheels/requirements.lock" in pip[0]
    assert [a for op, a in ins if op == "USER"][-1] == "1000:1000"
    labels = _labels((ROOT / "images" / name / "Dockerfile").read_text())
    for key in ("source", "revision", "version"):
        assert labels[f"org.opencontainers.image.{key}"], key


def test_only_the_ops_image_may_reach_the_hub():
    """fetch_checkpoints (ops) downloads hf:// sources; the model steps and the training job (train) never do."""
    envs = {name: " ".join(a for op, a in instructions((ROOT / "images" / name / "Dockerfile").read_text())
                           if op == "ENV") for name in ("ops", "train")}
    assert "HF_HUB_OFFLINE=1" in envs["train"] and "HF_HUB_OFFLINE" not in envs["ops"]


def test_image_tags_agree_everywhere():
    consts = _image_constants()
    train, ops = consts["STREAM_R1_TRAIN_IMAGE"], consts["STREAM_R1_OPS_IMAGE"]
    assert DEFAULT_TRAIN_IMAGE == train
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert train.endswith(f":{version}") and ops.endswith(f":{version}") and stream_r1.__version__ == version
    for name, const in (("train", train), ("ops", ops)):
        labels = _labels((ROOT / "images" / name / "Dockerfile").read_text())
        assert labels["io.stream-r1.image"] == const and labels["org.opencontainers.image.version"] == version
    pattern = re.compile(r"ghcr\.io/stream-r1/[\w.\-/]+(?::[\w.\-]+|@sha256:[0-9a-f]{64})?")
    for folder in ("manifests", "components", "pipelines", "images"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in {".yaml", ".yml", ".py", ""} and "compiled" not in path.parts:
                for ref in pattern.findall(path.read_text(errors="ignore")):
                    if ref.split(":")[0].endswith(("stream-r1-train", "stream-r1-ops")):
                        assert ref in (train, ops), f"{path.relative_to(ROOT)} uses {ref}; pinned: {train}, {ops}"
