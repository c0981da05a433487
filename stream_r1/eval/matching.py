"""Match existing video files to their prompts (``stream-r1 evaluate --videos DIR``).

Order of precedence:
1. an index JSON (``--index FILE``, or ``index.json`` in the directory): ``{file name: prompt}``
   (VBench's custom ``prompt_list`` format) or a list of ``{"video"|"path"|"file": ..., "prompt": ...}``;
   else the directory's ``generation.json`` written by ``stream_r1.sample.generate`` (its ``videos``);
2. with a prompt suite, the file name: VBench's ``<prompt>-<i>.mp4`` (the suite prompt or its short
   form, sample index stripped), or a leading prompt index ``<n>_...``/``<n>.mp4`` into the suite;
3. without a suite, the file stem is the prompt (as VBench's custom_input mode does).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from stream_r1.eval.suites import PromptSuite
from stream_r1.eval.video_io import list_videos

INDEX_FILE = "index.json"
GENERATION_FILE = "generation.json"
_SAMPLE_SUFFIX = re.compile(r"^(.*)-(\d+)$")
_INDEX_PREFIX = re.compile(r"^(\d+)(?:[_-].*)?$")


@dataclass(frozen=True)
class VideoEntry:
    """One video to score."""

    path: Path
    prompt: str
    prompt_index: int | None
    """Position of the prompt in the suite, when known."""
    name: str
    """Display name (the file stem)."""


def _read_index(path: Path) -> dict[str, str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict) and "videos" in data and isinstance(data["videos"], list):
        data = data["videos"]
    out: dict[str, str] = {}
    if isinstance(data, dict):
        out = {Path(str(k)).name: str(v) for k, v in data.items()}
    elif isinstance(data, list):
        for item in data:
            file = next((item.get(k) for k in ("video", "path", "file") if isinstance(item, dict) and k in item), None)
            if file is None or "prompt" not in item:
                raise ValueError(f"{path}: list entries need a 'video' (or 'path'/'file') and a 'prompt', got {item!r}")
            out[Path(str(file)).name] = str(item["prompt"])
    else:
        raise ValueError(f"{path}: expected {{file name: prompt}} or a list of {{video, prompt}}, got {type(data).__name__}")
    return out


def _has_video_prompts(path: Path) -> bool:
    """True for a generation.json (``stream_r1.sample``) whose ``videos`` entries carry path and prompt."""
    if not path.is_file():
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    videos = data.get("videos") if isinstance(data, dict) else None
    return bool(videos) and all(isinstance(v, dict) and "prompt" in v and "path" in v for v in videos)


def _match_name(stem: str, suite: PromptSuite) -> int | None:
    lookup = {p: i for i, p in enumerate(suite.prompts)}
    for i, p in enumerate(suite.short_prompts):
        lookup.setdefault(p, i)
    if stem in lookup:
        return lookup[stem]
    m = _SAMPLE_SUFFIX.match(stem)
    if m and m.group(1) in lookup:
        return lookup[m.group(1)]
    m = _INDEX_PREFIX.match(stem)
    if m and int(m.group(1)) < len(suite):
        return int(m.group(1))
    return None


def match_videos(videos_dir: str | Path, suite: PromptSuite | None, index_file: str | Path | None = None) -> list[VideoEntry]:
    """Pair every video under ``videos_dir`` with its prompt.

    Returns:
        Entries in suite order (prompt index, then file name); unknown positions last.

    Raises:
        FileNotFoundError: the directory or the index file does not exist, or holds no videos.
        ValueError: some videos cannot be matched (names them and the ways to fix it).
    """
    videos = list_videos(videos_dir)
    if not videos:
        raise FileNotFoundError(f"no video files (.mp4, ...) under {str(videos_dir)!r}")
    if index_file is not None:
        index_path = Path(index_file)
        if not index_path.is_file():
            raise FileNotFoundError(f"index file {str(index_path)!r} does not exist")
    else:
        index_path = Path(videos_dir) / INDEX_FILE
        if not index_path.is_file() and _has_video_prompts(Path(videos_dir) / GENERATION_FILE):
            index_path = Path(videos_dir) / GENERATION_FILE
    index = _read_index(index_path) if index_path.is_file() else None
    entries, unmatched = [], []
    for path in videos:
        stem = path.stem
        if index is not None:
            if path.name not in index:
                unmatched.append(path.name)
                continue
            prompt = index[path.name]
            pos = suite.prompts.index(prompt) if suite is not None and prompt in suite.prompts else None
            entries.append(VideoEntry(path, prompt, pos, stem))
        elif suite is not None:
            pos = _match_name(stem, suite)
            if pos is None:
                unmatched.append(path.name)
                continue
            entries.append(VideoEntry(path, suite.prompts[pos], pos, stem))
        else:
            entries.append(VideoEntry(path, _SAMPLE_SUFFIX.sub(r"\1", stem), None, stem))
    if unmatched:
        shown = ", ".join(unmatched[:5]) + (" ..." if len(unmatched) > 5 else "")
        raise ValueError(
            f"{len(unmatched)} video(s) in {str(videos_dir)!r} have no prompt: {shown}. Name files "
            "'<prompt>-<i>.mp4' or '<prompt index>_<anything>.mp4' for the suite, or give an index JSON "
            f"({{file name: prompt}}) with --index or as {INDEX_FILE} in the directory"
        )
    # Suite order (then file name) so reports list videos as the suite does.
    return sorted(entries, key=lambda e: (e.prompt_index is None, e.prompt_index or 0, e.name))
