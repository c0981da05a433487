"""Static checks of images/vbench (no Docker engine here): pinned base, exact pins, non-root, baked cache."""

from __future__ import annotations

import re
from pathlib import Path


def _reqs(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line!r} is not an exact pin"
            out[name.lower()] = version
    return out


def test_vbench_image_definition(repo_root: Path) -> None:
    d = repo_root / "images" / "vbench"
    docker = (d / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+(\S+)", docker, re.M).group(1)
    assert ":" in base and not base.endswith(":latest") and "cuda" in base
    assert re.search(r"^USER\s+vbench", docker, re.M), "must run as a non-root user"
    assert "VBENCH_CACHE_DIR=" in docker and "bake_cache.py" in docker
    assert "stream_r1.eval.vbench_runner" in docker and "--no-deps" in docker
    reqs = _reqs(d / "requirements.txt")
    assert reqs["vbench"] == "0.1.5" and reqs["transformers"] == "4.33.2"
    assert int(reqs["numpy"].split(".")[0]) < 2
    assert tuple(int(x) for x in reqs["timm"].split(".")) <= (1, 0, 12)
    assert {"decord", "opencv-python", "pyiqa"} <= set(reqs)
    cons = _reqs(d / "constraints.txt")
    assert set(cons) == {"torch", "torchvision"}
    # The bake step asks VBench to download every dimension's weights.
    bake = (d / "bake_cache.py").read_text()
    assert "local=False" in bake and bake.count('"') >= 32
