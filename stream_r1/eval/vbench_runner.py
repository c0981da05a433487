"""VBench runner: evaluates the 16 standard dimensions in a separate VBench environment (docs/evaluation.md).

VBench 0.1.5 pins transformers 4.33 / numpy<2 and downloads its weights, so it
cannot share the project environment. This module imports only torch-free project code (suites,
matching, the aggregation) at module level and ``vbench`` lazily, so it runs in that environment with
the project installed ``--no-deps``::

    python -m stream_r1.eval.vbench_runner --videos DIR --prompts vbench_extended \
        --data-root /data/prompts --output OUT [--dimensions d1 d2 ...] [--mode vbench_standard]

Steps: pair videos with prompts (index.json / generation.json / file names), stage them under
VBench's naming (``<short VBench prompt>-<i>.mp4``, i in 0..4, symlinks), call
``VBench(device, full_info, out).evaluate(..., dimension_list=[dim], local=True, mode=...)`` one
dimension at a time (a failing dimension does not lose the others), parse each
``<name>_eval_results.json`` (``{dim: [mean, [{video_path, video_results}, ...]]}``), aggregate with
:func:`stream_r1.eval.vbench.vbench_summary` and merge the ``vbench_*`` keys into ``OUT/metrics.json``.
``local=True`` requires the weights pre-baked in ``$VBENCH_CACHE_DIR`` (the image does that).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream_r1.eval.matching import VideoEntry, match_videos
from stream_r1.eval.suites import PromptSuite, default_data_root, resolve_suite
from stream_r1.eval.vbench import (
    STANDARD_ONLY_DIMENSIONS,
    VBENCH_DIMENSIONS,
    canonical_dimension,
    vbench_metrics,
    vbench_summary,
)
from stream_r1.utils.io import atomic_write_json
from stream_r1.utils.logging import get_logger

log = get_logger(__name__)

STANDARD_MODE = "vbench_standard"
CUSTOM_MODE = "custom_input"
MAX_SAMPLES_PER_PROMPT = 5
"""VBench standard mode looks for ``<prompt>-0`` .. ``<prompt>-4`` only."""
FULL_INFO_FILE = "VBench_full_info.json"
RUN_NAME = "stream_r1"


def vbench_video_name(prompt: str, sample: int, suffix: str = ".mp4") -> str:
    """VBench standard-mode file name ``f"{prompt}-{sample}{suffix}"`` (vbench ``build_full_info_json``)."""
    if not 0 <= sample < MAX_SAMPLES_PER_PROMPT:
        raise ValueError(f"VBench sample index must be in 0..{MAX_SAMPLES_PER_PROMPT - 1}, got {sample}")
    if "/" in prompt or "\0" in prompt:
        raise ValueError(f"prompt {prompt!r} cannot be a file name (contains '/' or NUL)")
    return f"{prompt}-{sample}{suffix}"


@dataclass(frozen=True)
class StagedVideo:
    """One video under its VBench name."""

    source: Path
    staged_name: str
    prompt: str
    """The prompt VBench sees: the short VBench prompt (standard) or the generation prompt (custom)."""


def plan_staging(entries: Sequence[VideoEntry], suite: PromptSuite | None, mode: str) -> list[StagedVideo]:
    """Name every video for VBench.

    Standard mode needs each video's position in a VBench suite (``vbench`` or ``vbench_extended``):
    the video is named by the *short* prompt of that position (how the papers evaluate videos
    generated from extended prompts), sample index counted per short prompt.

    Raises:
        ValueError: standard mode without a suite position, or more than 5 samples of a prompt.
    """
    if mode not in (STANDARD_MODE, CUSTOM_MODE):
        raise ValueError(f"mode {mode!r}; allowed {STANDARD_MODE!r} or {CUSTOM_MODE!r}")
    staged: list[StagedVideo] = []
    counts: dict[str, int] = {}
    for k, e in enumerate(entries):
        suffix = e.path.suffix.lower() or ".mp4"
        if mode == CUSTOM_MODE:
            staged.append(StagedVideo(e.path, f"{k:05d}{suffix}", e.prompt))
            continue
        if suite is None or e.prompt_index is None:
            raise ValueError(
                f"{STANDARD_MODE} needs every video matched to a VBench suite prompt; {e.path.name} is not. "
                f"Pass --prompts vbench or vbench_extended, or use --mode {CUSTOM_MODE}"
            )
        short = suite.short_prompts[e.prompt_index]
        i = counts.get(short, 0)
        if i >= MAX_SAMPLES_PER_PROMPT:
            raise ValueError(f"more than {MAX_SAMPLES_PER_PROMPT} videos for VBench prompt {short!r}; VBench reads 0..4")
        counts[short] = i + 1
        staged.append(StagedVideo(e.path, vbench_video_name(short, i, suffix), short))
    return staged


def stage_videos(plan: Sequence[StagedVideo], staging_dir: str | Path) -> Path:
    """Create ``staging_dir`` holding only the planned files (symlinks; copies where links fail)."""
    staging = Path(staging_dir)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for s in plan:
        target = staging / s.staged_name
        try:
            os.symlink(s.source.resolve(), target)
        except OSError:
            shutil.copyfile(s.source, target)
    return staging


def select_dimensions(requested: Sequence[str] | None, mode: str) -> tuple[list[str], list[str]]:
    """``(dimensions to run, dimensions skipped)``: all 16 by default; custom_input cannot run 6 of them."""
    dims = [canonical_dimension(d) for d in requested] if requested else list(VBENCH_DIMENSIONS)
    dims = list(dict.fromkeys(dims))
    if mode == CUSTOM_MODE:
        skipped = [d for d in dims if d in STANDARD_ONLY_DIMENSIONS]
        return [d for d in dims if d not in STANDARD_ONLY_DIMENSIONS], skipped
    return dims, []


def parse_eval_results(results: dict[str, Any] | str | Path) -> dict[str, float]:
    """VBench ``<name>_eval_results.json`` -> ``{snake_case dimension: mean score}``.

    Raises:
        ValueError: an entry is not ``[mean, per_video_list]`` with a numeric mean.
    """
    data = json.loads(Path(results).read_text(encoding="utf-8")) if isinstance(results, (str, Path)) else results
    if not isinstance(data, dict):
        raise ValueError(f"VBench results must be a JSON object {{dimension: [mean, videos]}}, got {type(data).__name__}")
    out: dict[str, float] = {}
    for dim, value in data.items():
        if not isinstance(value, (list, tuple)) or not value or isinstance(value[0], bool) \
                or not isinstance(value[0], (int, float)):
            raise ValueError(f"VBench result for {dim!r} must be [mean_score, per_video_results], got {value!r:.200}")
        out[canonical_dimension(dim)] = float(value[0])
    return out


def default_full_info(data_root: Path | None) -> Path:
    """``<data_root>/VBench_full_info.json``, else the copy packaged inside ``vbench``."""
    if data_root is not None and (data_root / FULL_INFO_FILE).is_file():
        return data_root / FULL_INFO_FILE
    from importlib import resources

    return Path(str(resources.files("vbench") / FULL_INFO_FILE))


def _vbench_class() -> Callable[..., Any]:
    try:
        from vbench import VBench
    except ImportError as e:
        raise RuntimeError(
            "the vbench package is not importable here; run this module where VBench 0.1.5 is installed "
            "(docs/evaluation.md, VBench)"
        ) from e
    return VBench


def run_vbench(
    staging: Path,
    plan: Sequence[StagedVideo],
    dimensions: Sequence[str],
    mode: str,
    raw_dir: Path,
    full_info: Path,
    device: str = "cuda",
    vbench_factory: Callable[..., Any] | None = None,
) -> tuple[dict[str, float], dict[str, str]]:
    """Evaluate each dimension separately; returns ``(scores, failures {dim: error})``."""
    factory = vbench_factory or _vbench_class()
    raw_dir.mkdir(parents=True, exist_ok=True)
    bench = factory(device, str(full_info), str(raw_dir))
    prompt_list: dict[str, str] | list[str] = {s.staged_name: s.prompt for s in plan} if mode == CUSTOM_MODE else []
    scores: dict[str, float] = {}
    failures: dict[str, str] = {}
    for dim in dimensions:
        name = f"{RUN_NAME}_{dim}"
        try:
            bench.evaluate(videos_path=str(staging), name=name, prompt_list=prompt_list, dimension_list=[dim],
                           local=True, mode=mode)
            scores.update(parse_eval_results(raw_dir / f"{name}_eval_results.json"))
            log.info("VBench %s: %.4f", dim, scores[dim])
        except Exception as e:  # one dimension's failure (a missing weight, a bad video) must not lose the rest
            failures[dim] = f"{type(e).__name__}: {e}"
            log.error("VBench %s failed: %s", dim, failures[dim])
    return scores, failures


def merge_metrics(path: Path, new: dict[str, float]) -> dict[str, float]:
    """Merge ``new`` into the metrics.json at ``path`` (created when absent), atomically."""
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    merged = {**{k: v for k, v in old.items() if not k.startswith("vbench_")}, **new}
    atomic_write_json(path, merged)
    return merged


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stream_r1.eval.vbench_runner", description=__doc__.split("\n")[0])
    p.add_argument("--videos", required=True, help="directory of generated videos (+ index.json / generation.json)")
    p.add_argument("--prompts", default="vbench_extended", help="suite the videos were generated from")
    p.add_argument("--data-root", default=None, help="directory of the public prompt suites")
    p.add_argument("--index", default=None, help="JSON {file name: prompt}")
    p.add_argument("--output", required=True, help="output directory (metrics.json is merged)")
    p.add_argument("--dimensions", nargs="*", default=None, help="subset of the 16 dimensions (default all)")
    p.add_argument("--mode", default=STANDARD_MODE, choices=(STANDARD_MODE, CUSTOM_MODE))
    p.add_argument("--full-info", default=None, help=f"{FULL_INFO_FILE} (default: data root, else vbench's copy)")
    p.add_argument("--device", default="cuda")
    return p


def main(argv: Sequence[str] | None = None, vbench_factory: Callable[..., Any] | None = None) -> int:
    """Entry point; returns 0 when every requested dimension was evaluated, 1 otherwise, 2 on bad input."""
    args = build_parser().parse_args(argv)
    try:
        data_root = Path(args.data_root) if args.data_root else default_data_root()
        suite = resolve_suite(args.prompts, data_root=data_root) if args.prompts else None
        dims, skipped = select_dimensions(args.dimensions, args.mode)
        plan = plan_staging(match_videos(args.videos, suite, args.index), suite, args.mode)
    except (ValueError, FileNotFoundError) as e:
        print(f"vbench_runner: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.output)
    staging = stage_videos(plan, out / "vbench_videos")
    full_info = Path(args.full_info) if args.full_info else default_full_info(data_root)
    scores, failures = run_vbench(staging, plan, dims, args.mode, out / "vbench_raw", full_info, args.device,
                                  vbench_factory)
    summary = vbench_summary(scores) if scores else None
    if summary is not None:  # strict JSON: a group with no dimension present is null, not NaN
        summary = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}
    if scores:
        merge_metrics(out / "metrics.json", vbench_metrics(scores))
    atomic_write_json(out / "vbench_summary.json", {
        "mode": args.mode, "suite": suite.name if suite else None, "num_videos": len(plan),
        "dimension_scores": scores, "summary": summary, "skipped": skipped, "failures": failures,
        "note": None if summary and summary["complete"] else
        "partial dimension set: vbench_*_partial keys are NOT leaderboard-comparable",
    })
    return 0 if not failures else 1


if __name__ == "__main__":  # pragma: no cover - run in a VBench environment
    sys.exit(main())
