"""docs/operations.md stays true: the paths it names exist and the commands it shows parse."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from stream_r1.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "operations.md").read_text()


def test_named_repository_paths_exist():
    paths = set(re.findall(r"\b((?:manifests|images|stream_r1|components)/[\w./-]+)", DOC))
    assert paths
    for p in paths:
        assert (ROOT / p.rstrip(".")).exists(), p


def _commands() -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", DOC, flags=re.S)
    joined = [ln for b in blocks for ln in b.replace("\\\n", " ").splitlines()]
    joined = [ln.replace("$(date +%Y%m%d)", "20261122") for ln in joined]
    return [shlex.split(ln.split("#")[0]) for ln in joined if ln.strip().startswith("stream-r1 ")]


@pytest.mark.parametrize("argv", _commands(), ids=lambda a: " ".join(a[:3]))
def test_stream_r1_commands_parse(argv):
    args = [a.replace("$NS", "stream-r1") for a in argv[1:]]
    parsed = build_parser().parse_args(args)
    assert callable(parsed._run)


def test_every_section_has_a_command():
    sections = re.split(r"\n## ", DOC)[1:]
    for s in sections:
        title = s.splitlines()[0]
        if title.startswith(("0.", "9.")):
            continue
        assert "```" in s, f"section {title!r} shows no command"
    for needle in ("offline only", "kubectl apply -k manifests/overlays/gpu-8x", "create secret generic",
                   "pipeline schedule", "port-forward deploy/stream-r1-tensorboard", "KubeflowModelRegistry"):
        assert needle in DOC
