"""Prompt suites: the project's tiny suite, named public suites under a data root, or a file path.

The public suites (VBench ``all_dimension`` and its extended form, MovieGenBench) are data kept
outside the repository (``../shared/data/prompts`` locally; in a cluster the pipeline's fetch step
brings them into the artifact store and passes a local path). The core reads local files only.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from stream_r1.utils.io import package_path

DATA_ROOT_ENV = "STREAM_R1_DATA_ROOT"
TINY = "tiny"

# name -> (file under the data root, file with the short prompts used to name videos or None)
NAMED_SUITES: dict[str, tuple[str, str | None]] = {
    "vbench": ("vbench_all_dimension.txt", None),
    "vbench_extended": ("vbench_all_dimension_extended.txt", "vbench_all_dimension.txt"),
    "moviegen": ("MovieGenVideoBench.txt", None),
    "moviegen_extended": ("MovieGenVideoBench_extended.txt", "MovieGenVideoBench.txt"),
}
SUITE_NAMES = (TINY, *NAMED_SUITES)


@dataclass(frozen=True)
class PromptSuite:
    """An ordered prompt list.

    Attributes:
        name: suite name (``tiny``, ``vbench_extended``, or the file stem of a path).
        prompts: the prompts fed to the generator.
        source: where they were read from.
        short_prompts: for extended suites the original short prompt of each entry (same order):
            VBench names videos and looks up dimensions by it. Equals ``prompts`` otherwise.
    """

    name: str
    prompts: tuple[str, ...]
    source: str
    short_prompts: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.prompts)

    def head(self, n: int) -> PromptSuite:
        """The first ``n`` prompts (``n <= 0``: all)."""
        if n <= 0 or n >= len(self.prompts):
            return self
        return PromptSuite(self.name, self.prompts[:n], self.source, self.short_prompts[:n])


def default_data_root() -> Path | None:
    """``$STREAM_R1_DATA_ROOT``, else ``../shared/data/prompts`` beside the repository when it exists."""
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return Path(env)
    candidate = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "prompts"
    return candidate if candidate.is_dir() else None


def read_prompt_file(path: str | Path) -> list[str]:
    """Prompts from a ``.txt`` (one per line, blank lines skipped) or ``.json`` file.

    JSON may be a list of strings, a list of ``{"prompt_en"|"prompt": ...}`` objects (VBench's
    ``VBench_full_info.json``), or ``{"prompts": [...]}``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        if isinstance(data, dict) and "prompts" in data:
            data = data["prompts"]
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of prompts, got {type(data).__name__}")
        prompts = []
        for item in data:
            if isinstance(item, str):
                prompts.append(item)
            elif isinstance(item, dict) and ("prompt_en" in item or "prompt" in item):
                prompts.append(str(item.get("prompt_en", item.get("prompt"))))
            else:
                raise ValueError(f"{path}: entries must be strings or objects with 'prompt_en'/'prompt', got {item!r}")
    else:
        prompts = [line.strip() for line in text.splitlines()]
    prompts = [p for p in prompts if p]
    if not prompts:
        raise ValueError(f"prompt file {str(path)!r} holds no prompts")
    return prompts


def _tiny_suite() -> PromptSuite:
    res = resources.files("stream_r1") / "assets" / "prompts" / "tiny.txt"
    prompts = tuple(p.strip() for p in res.read_text("utf-8").splitlines() if p.strip())
    return PromptSuite(TINY, prompts, "package:stream_r1/assets/prompts/tiny.txt", prompts)


def resolve_suite(spec: str | None, data_root: str | Path | None = None, max_prompts: int = 0) -> PromptSuite:
    """Resolve ``spec`` to a prompt suite.

    Args:
        spec: ``''``/``None``/``tiny`` (the shipped tiny suite), a name in ``NAMED_SUITES``
            (resolved against ``data_root``), a local path (``.txt``/``.json``) or a ``file://`` URI.
        data_root: directory with the public prompt files; default :func:`default_data_root`.
        max_prompts: keep only the first N (0 = all).

    Raises:
        ValueError: a remote URI (s3://, gs://, http://...) or a malformed file.
        FileNotFoundError: the named suite's data root or file, or the path, does not exist.
    """
    spec = (spec or "").strip()
    if max_prompts < 0:
        raise ValueError(f"max_prompts must be >= 0 (0 = all), got {max_prompts}")
    if spec in ("", TINY):
        return _tiny_suite().head(max_prompts)
    if spec in NAMED_SUITES:
        root = Path(data_root) if data_root is not None else default_data_root()
        if root is None or not root.is_dir():
            raise FileNotFoundError(
                f"suite {spec!r} is read from a data root, but {str(root) if root else 'none'} does not exist; "
                f"pass --data-root DIR or set ${DATA_ROOT_ENV} to the directory holding {NAMED_SUITES[spec][0]}"
            )
        fname, short_name = NAMED_SUITES[spec]
        prompts = read_prompt_file(root / fname)
        short = read_prompt_file(root / short_name) if short_name else prompts
        if len(short) != len(prompts):
            raise ValueError(
                f"suite {spec!r}: {fname} has {len(prompts)} prompts but {short_name} has {len(short)}; "
                "the extended file must extend the short one line by line"
            )
        return PromptSuite(spec, tuple(prompts), str(root / fname), tuple(short)).head(max_prompts)
    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://(.*)$", spec)
    if match:
        scheme, rest = match.group(1).lower(), match.group(2)
        if scheme != "file":
            raise ValueError(
                f"prompt suite URI {spec!r}: the evaluation reads local files only; fetch it first "
                "(the pipeline's fetch step downloads suites from the artifact store) and pass the local path"
            )
        spec = rest
    path = package_path(spec)  # package:stream_r1/... is a file shipped in the package (same in every image)
    if not path.exists():
        close = difflib.get_close_matches(spec, list(SUITE_NAMES), n=1)
        hint = f"; did you mean the suite {close[0]!r}?" if close else ""
        raise FileNotFoundError(
            f"prompt suite {spec!r} is neither a suite name {list(SUITE_NAMES)} nor an existing file{hint}"
        )
    prompts = tuple(read_prompt_file(path))
    return PromptSuite(path.stem, prompts, str(path), prompts).head(max_prompts)
