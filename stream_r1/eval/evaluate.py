"""``stream-r1 evaluate``: generate a suite's videos (or take existing ones) and score them.

Outputs in ``output_dir``: ``metrics.json`` (flat numbers, docs/evaluation.md), ``per_video.json``,
``evaluation.json`` (what was evaluated, notes) and a self-contained ``report.html``; generated
videos go to ``output_dir/videos`` with generation.json beside them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stream_r1.config import RunConfig, config_hash, write_resolved_config
from stream_r1.config.derived import check_latent_frames, checkpoint_path, chunk_pixel_frames
from stream_r1.eval.ground_truth import GroundTruth, aggregate_rows, check_prompts, score_row
from stream_r1.eval.matching import VideoEntry, match_videos
from stream_r1.eval.metrics import VideoMetrics, video_metrics
from stream_r1.eval.report import MAX_STRIPS, frame_strip_png, write_report
from stream_r1.eval.reward_scores import REWARD_AXES
from stream_r1.eval.speed import read_generation, speed_metrics
from stream_r1.eval.suites import PromptSuite, resolve_suite
from stream_r1.eval.video_io import read_video
from stream_r1.utils.device import resolve_device
from stream_r1.utils.io import atomic_write_json
from stream_r1.utils.logging import get_logger
from stream_r1.utils.paths import check_output_dir

log = get_logger(__name__)

METRICS_FILE = "metrics.json"
PER_VIDEO_FILE = "per_video.json"
INFO_FILE = "evaluation.json"
REPORT_FILE = "report.html"
VIDEOS_SUBDIR = "videos"


@dataclass
class EvaluationResult:
    """What :func:`evaluate` wrote."""

    output_dir: Path
    metrics: dict[str, float]
    per_video: list[dict[str, Any]]
    info: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _generate(
    cfg: RunConfig, checkpoint: str, suite: PromptSuite, num_frames: int, videos_dir: Path, device: str,
    compile: bool | None = None,
) -> list[VideoEntry]:
    """Generate one video per suite prompt with ``stream_r1.sample.generate`` and pair files with prompts."""
    from stream_r1.sample.generate import generate

    report = generate(cfg, checkpoint, list(suite.prompts), num_frames, videos_dir, cfg.eval.use_ema, cfg.eval.seed,
                      device=device, compile=compile)
    if len(report.results) != len(suite):
        raise RuntimeError(f"generation returned {len(report.results)} videos for {len(suite)} prompts ({videos_dir})")
    return [VideoEntry(Path(r.path), r.prompt, i, Path(r.path).stem) for i, r in enumerate(report.results)]


def _first_prompts(entries: list[VideoEntry], n: int) -> list[VideoEntry]:
    """Keep the videos of the first ``n`` prompts (suite order when known, else file order); 0 = all."""
    if n <= 0:
        return entries
    ordered = sorted(entries, key=lambda e: (e.prompt_index is None, e.prompt_index or 0))
    chosen: list[str] = []
    for e in ordered:
        if e.prompt not in chosen:
            chosen.append(e.prompt)
    keep = set(chosen[:n])
    return [e for e in entries if e.prompt in keep]


def _restrict_generation(generation: dict[str, Any], entries: list[VideoEntry]) -> dict[str, Any]:
    """generation.json limited to the scored videos (``eval.max_prompts`` may drop some)."""
    videos = generation.get("videos")
    if not isinstance(videos, list) or not all(isinstance(v, dict) and "path" in v for v in videos):
        return generation
    names = {e.path.name for e in entries}
    kept = [v for v in videos if Path(str(v["path"])).name in names]
    if len(kept) == len(videos) or not kept:
        return generation
    # The run-level fps covers every video; recompute it from the kept ones.
    return {k: v for k, v in generation.items() if k != "fps"} | {"videos": kept}


def _aggregate(per_video: list[dict[str, Any]], with_reward: bool) -> dict[str, float]:
    out: dict[str, float] = {"num_videos": float(len(per_video))}
    for key in ("num_frames", "duration_s", *VideoMetrics.SCALARS):
        out[key] = float(np.mean([v[key] for v in per_video]))
    for key in ("drift_brightness", "drift_saturation", "drift_sharpness"):
        out[f"{key}_abs"] = float(np.mean([abs(v[key]) for v in per_video]))
    if with_reward:
        for axis in (*(a.lower() for a in REWARD_AXES), "overall"):
            out[f"reward_{axis}_mean"] = float(np.mean([v[f"reward_{axis}"] for v in per_video]))
    return out


def evaluate(
    cfg: RunConfig,
    *,
    output_dir: str | Path,
    checkpoint: str | Path | None = None,
    prompts: str | None = None,
    num_frames: int | None = None,
    videos_dir: str | Path | None = None,
    index_file: str | Path | None = None,
    data_root: str | Path | None = None,
    device: str = "cpu",
    reward_model: Any = None,
    compile: bool | None = None,
    ground_truth: GroundTruth | None = None,
) -> EvaluationResult:
    """Generate (or take) videos, score them and write metrics.json, per_video.json and report.html.

    Args:
        cfg: the run config (``eval.*``, ``model.frames_per_block``, ``checkpoints.*``).
        output_dir: where the outputs go (created).
        checkpoint: the student checkpoint to generate with (required without ``videos_dir``).
        prompts: suite name/path/URI (default ``eval.prompts``, '' = tiny); with ``videos_dir`` and
            no suite given, prompts come from an index JSON or the file names.
        num_frames: latent frames per video (default ``eval.num_frames``).
        videos_dir: score these existing videos instead of generating.
        index_file: ``{file name: prompt}`` JSON for ``videos_dir``.
        data_root: directory of the public prompt suites.
        device: torch device for generation and the reward model.
        reward_model: an already loaded VideoRewardModel (tests / callers that reuse one).
        compile: torch.compile the student when generating (None: on for CUDA only).
        ground_truth: the world's scorer for ``eval.ground_truth`` (built by the caller, which knows the worlds:
            ``stream_r1.shapes.ground_truth.ground_truth_for``); required when it is set.

    Raises:
        ValueError / FileNotFoundError: bad inputs, before any generation or model load.
    """
    # ---- validate everything a user can get wrong, before heavy work ----
    out = check_output_dir(output_dir)
    resolve_device(device)
    n_latent = check_latent_frames(cfg.eval.num_frames if num_frames is None else num_frames,
                                   cfg.model.frames_per_block, "--num-frames")
    spec = prompts if prompts is not None else cfg.eval.prompts
    suite: PromptSuite | None = None
    if videos_dir is None:
        suite = resolve_suite(spec, data_root=data_root, max_prompts=cfg.eval.max_prompts)
    elif prompts is not None:  # existing videos may cover any part of the suite: match against all of it
        suite = resolve_suite(spec, data_root=data_root)
    if videos_dir is None:
        if checkpoint is None:
            raise ValueError("pass --checkpoint PATH to generate videos, or --videos DIR to score existing ones")
        if not Path(checkpoint).exists():
            raise FileNotFoundError(f"checkpoint {str(checkpoint)!r} does not exist")
    else:
        if not Path(videos_dir).is_dir():
            raise FileNotFoundError(f"--videos {str(videos_dir)!r} is not a directory")
    with_reward = bool(cfg.eval.reward_scores)
    notes: list[str] = []
    if with_reward and reward_model is None and not checkpoint_path(cfg, "reward").exists():
        raise FileNotFoundError(
            f"VideoReward checkpoint {str(checkpoint_path(cfg, 'reward'))!r} does not exist; set checkpoints.root / "
            "checkpoints.reward, or --set eval.reward_scores=false to skip reward scores"
        )
    if not with_reward:
        notes.append("VideoReward VQ/MQ/TA skipped: eval.reward_scores is false.")
    if cfg.eval.ground_truth and (ground_truth is None or ground_truth.name != cfg.eval.ground_truth):
        raise ValueError(f"eval.ground_truth={cfg.eval.ground_truth!r} needs that world's scorer; call evaluate through "
                         "`stream-r1 evaluate`, which provides it")
    if ground_truth is not None and suite is not None:
        check_prompts(ground_truth, suite.prompts)  # a prompt the world cannot score: before any generation

    # ---- videos ----
    out.mkdir(parents=True, exist_ok=True)
    write_resolved_config(cfg, out)
    t0 = time.perf_counter()
    if videos_dir is None:
        gen_dir = out / VIDEOS_SUBDIR
        log.info("generating %d videos of %d latent frames into %s", len(suite), n_latent, gen_dir)
        entries = _generate(cfg, str(checkpoint), suite, n_latent, gen_dir, device, compile)
    else:
        gen_dir = Path(videos_dir)
        entries = match_videos(videos_dir, suite, index_file)
        entries = _first_prompts(entries, cfg.eval.max_prompts)
        if ground_truth is not None:  # prompts from an index or file names: checked before any scoring
            check_prompts(ground_truth, (e.prompt for e in entries))
    generation = read_generation(gen_dir)
    if generation is None:
        notes.append("No generation.json beside the videos: speed metrics (fps, chunk latency) not available.")

    # ---- score ----
    if with_reward and reward_model is None:
        from stream_r1.eval.reward_scores import load_reward_model

        reward_model = load_reward_model(cfg, device)
    chunk, first_chunk = chunk_pixel_frames(cfg.model.frames_per_block)
    per_video: list[dict[str, Any]] = []
    strips: dict[str, bytes] = {}
    for entry in entries:
        frames, fps = read_video(entry.path)
        fps = fps or float(cfg.eval.fps)
        m = video_metrics(frames, fps, chunk, first_chunk)
        row: dict[str, Any] = {"name": entry.name, "prompt": entry.prompt, "video": str(entry.path),
                               "prompt_index": entry.prompt_index, **m.to_dict()}
        if with_reward:
            from stream_r1.eval.reward_scores import score_video

            row.update(score_video(reward_model, frames, fps, entry.prompt, cfg))
        if ground_truth is not None:
            row.update(score_row(ground_truth, frames, entry.prompt))
        per_video.append(row)
        if len(strips) < MAX_STRIPS:
            strips[entry.name] = frame_strip_png(frames)
        log.info("scored %s: flickering %.4f motion %.4f", entry.name, m.temporal_flickering, m.motion_score)

    metrics = _aggregate(per_video, with_reward)
    metrics.update(aggregate_rows(per_video))
    if generation is not None:
        metrics.update(speed_metrics(_restrict_generation(generation, entries)))
    info = {
        "checkpoint": str(checkpoint) if checkpoint is not None else "",
        "videos": str(gen_dir),
        "suite": suite.name if suite is not None else "(from file names / index)",
        "suite_source": suite.source if suite is not None else "",
        "num_latent_frames": n_latent if videos_dir is None else None,
        "config_name": cfg.name,
        "config_hash": config_hash(cfg),
        "reward_scores": with_reward,
        "ground_truth": ground_truth.name if ground_truth is not None else "",
        "seconds": round(time.perf_counter() - t0, 3),
    }
    atomic_write_json(out / PER_VIDEO_FILE, per_video)
    atomic_write_json(out / INFO_FILE, {**info, "notes": notes})
    atomic_write_json(out / METRICS_FILE, metrics)
    write_report(out / REPORT_FILE, metrics, per_video, strips, title=f"stream-r1 evaluation: {info['suite']}",
                 info=info, notes=notes)
    return EvaluationResult(out, metrics, per_video, info, notes)
