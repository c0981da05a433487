"""Streaming text-to-video generation with the causal student (docs/method.md §1.11).

Per prompt: embed the text, stream latent chunks with :func:`stream_r1.rollout.streaming.stream_chunks`
(4 warped steps per chunk with fresh re-noising, then the t=0 context pass; rolling cache when
``model.local_attn_frames != -1``), decode every chunk as it arrives with the VAE's causal feature cache
and append its frames to the mp4 — a long video never holds all its frames. ``generation.json`` records
per-chunk latency, FPS (pixel frames per second of wall time) and the config hash.

Every input is validated by :func:`plan_generation` before any model is loaded.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from stream_r1.config import config_hash, write_resolved_config
from stream_r1.config.derived import check_latent_frames, checkpoint_path, pixel_frames
from stream_r1.config.schema import RunConfig
from stream_r1.models.causal_attention import check_flash_available
from stream_r1.models.compile import resolve_compile
from stream_r1.models.loading import CheckpointInfo, check_checkpoint_matches_base, read_transformer_config
from stream_r1.utils.device import resolve_device
from stream_r1.utils.io import atomic_write_json, check_safetensors_under, read_prompt_file
from stream_r1.utils.logging import get_logger
from stream_r1.utils.paths import check_output_dir
from stream_r1.utils.progress import progress

logger = get_logger(__name__)

GENERATION_FILE = "generation.json"


def read_prompts(path: str | Path) -> list[str]:
    """Prompts of a file, one per line (errors name ``--prompts``; see :func:`read_prompt_file`)."""
    return read_prompt_file(path, setting="--prompts")


def _check_rope_length(cfg: RunConfig, base_dir: Path, num_frames: int) -> None:
    """A full cache uses absolute frame positions: the stream must fit the model's RoPE table."""
    if cfg.model.local_attn_frames != -1:
        return  # rolling window: relative positions over [sink ++ window] (§2.4), any length
    rope = int(read_transformer_config(base_dir).get("rope_max_seq_len", 1024))
    if num_frames > rope:
        raise ValueError(
            f"--num-frames={num_frames} with a full KV cache (model.local_attn_frames=-1) exceeds the model's "
            f"rope_max_seq_len={rope}; use at most {rope} frames or a rolling window (model.local_attn_frames=9)"
        )


@dataclass(frozen=True)
class GenerationPlan:
    """Validated inputs of one generation run (nothing loaded yet)."""

    prompts: list[str]
    num_frames: int
    output_dir: Path
    seed: int
    checkpoint: Path | None
    checkpoint_info: CheckpointInfo | None
    use_ema: bool
    paths: dict[str, Path]


def plan_generation(
    cfg: RunConfig,
    checkpoint: str | Path | None,
    prompts: list[str] | str | Path,
    num_frames: int,
    output_dir: str | Path,
    use_ema: bool,
    seed: int | None = None,
    *,
    ema_fallback: bool = True,
) -> GenerationPlan:
    """Check every input cheaply (the checkpoint is only peeked at, memory-mapped).

    Args:
        cfg: Run config (``checkpoints.*``, ``model.*``, ``rollout.*``, ``eval.*``).
        checkpoint: Generator ``.pt``/``.safetensors`` or a transformer directory; None or ``""`` =
            ``checkpoints.student_init`` (or the base weights when that is empty).
        prompts: A list of prompts or a prompt file.
        num_frames: Latent frames per video, a multiple of ``model.frames_per_block``.
        output_dir: Where videos and ``generation.json`` go.
        use_ema: Take ``generator_ema`` from the checkpoint.
        seed: Base seed (video i uses ``seed + i``); None = ``eval.seed``.
        ema_fallback: With ``use_ema`` and a checkpoint without EMA, use ``generator`` (warned) instead of
            failing; the CLI's explicit ``--use-ema`` sets this False.

    Raises:
        FileNotFoundError: prompt file, checkpoint or model directories missing.
        ValueError: bad frame count, empty prompts, unrecognised checkpoint layout, EMA requested but absent,
            an output directory that cannot be written.
    """
    check_output_dir(output_dir)
    prompt_list = read_prompts(prompts) if isinstance(prompts, (str, Path)) else list(prompts)
    if not prompt_list or not all(isinstance(p, str) and p.strip() for p in prompt_list):
        raise ValueError("prompts must be a non-empty list of non-empty strings (or a prompt file)")
    check_latent_frames(num_frames, cfg.model.frames_per_block, "--num-frames")
    paths = {n: checkpoint_path(cfg, n) for n in ("base", "vae", "text_encoder", "tokenizer")}
    missing = [f"checkpoints.{n}={str(p)!r}" for n, p in paths.items() if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"missing model files: {', '.join(missing)}; set checkpoints.root (tiny models: "
            "`stream-r1 make-tiny-checkpoints DIR` then --set checkpoints.root=DIR)"
        )
    check_safetensors_under(paths)
    if checkpoint in (None, "") and cfg.checkpoints.student_init:
        checkpoint = checkpoint_path(cfg, "student_init")
    ckpt = Path(checkpoint) if checkpoint not in (None, "") else None
    info = None
    if ckpt is not None:
        if not ckpt.exists():
            raise FileNotFoundError(f"checkpoint {ckpt} does not exist (a generator .pt or a transformer directory)")
        if ckpt.is_dir():
            if not (ckpt / "config.json").is_file():
                raise ValueError(f"checkpoint directory {ckpt} has no config.json; expected a Wan transformer directory")
        else:
            check_safetensors_under({"checkpoint": ckpt})
            info = check_checkpoint_matches_base(paths["base"], ckpt)
    _check_rope_length(cfg, paths["base"], num_frames)
    has_ema = info is not None and info.has_ema
    if use_ema and not has_ema:
        is_dir = ckpt is not None and ckpt.is_dir()
        what = f"directory {ckpt}" if is_dir else f"{ckpt} ({info.layout if info else 'base'})"
        if not ema_fallback:
            raise ValueError(f"--use-ema was given but {what} has no 'generator_ema'; drop --use-ema")
        if is_dir:
            # A transformer directory is one set of weights (an export's generator_ema/ is the EMA itself):
            # eval.use_ema ("the EMA when the checkpoint has one") has nothing to choose from; not a fallback.
            logger.debug("checkpoint %s is a single transformer directory; eval.use_ema does not apply", what)
        else:
            logger.warning("checkpoint %s has no generator_ema; generating with its 'generator' weights", what)
        use_ema = False
    return GenerationPlan(
        prompts=prompt_list,
        num_frames=num_frames,
        output_dir=Path(output_dir),
        seed=cfg.eval.seed if seed is None else int(seed),
        checkpoint=ckpt,
        checkpoint_info=info,
        use_ema=use_ema,
        paths=paths,
    )


@dataclass
class VideoResult:
    """One generated video and its timings."""

    path: Path
    prompt: str
    seed: int
    num_latent_frames: int
    num_pixel_frames: int
    chunk_latency_ms: list[float] = field(default_factory=list)
    """Per chunk: denoising steps + context pass + VAE decode of the chunk (what a viewer waits)."""
    chunk_denoise_ms: list[float] = field(default_factory=list)
    """Per chunk: the transformer part only."""
    seconds: float = 0.0
    fps: float = 0.0


@dataclass
class GenerationReport:
    """What :func:`generate` produced; ``to_dict`` is the content of ``generation.json``."""

    output_dir: Path
    results: list[VideoResult]
    config_hash: str
    checkpoint: str | None
    use_ema: bool
    num_latent_frames: int
    device: str
    total_seconds: float = 0.0

    @property
    def videos(self) -> list[Path]:
        """The mp4 files, in prompt order."""
        return [r.path for r in self.results]

    @property
    def fps(self) -> float:
        """Pixel frames per second of wall time over all videos (text encoding excluded)."""
        seconds = sum(r.seconds for r in self.results)
        return sum(r.num_pixel_frames for r in self.results) / seconds if seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (paths relative to ``output_dir``)."""
        videos = []
        for r in self.results:
            d = asdict(r)
            d["path"] = r.path.name
            videos.append(d)
        return {
            "fps": self.fps,
            "total_seconds": self.total_seconds,
            "config_hash": self.config_hash,
            "checkpoint": self.checkpoint,
            "use_ema": self.use_ema,
            "num_latent_frames": self.num_latent_frames,
            "num_pixel_frames": pixel_frames(self.num_latent_frames),
            "device": self.device,
            "videos": videos,
        }


def generate(
    cfg: RunConfig,
    checkpoint: str | Path | None,
    prompts: list[str] | str | Path,
    num_frames: int,
    output_dir: str | Path,
    use_ema: bool = False,
    seed: int | None = None,
    *,
    device: str | torch.device = "cpu",
    ema_fallback: bool = True,
    compile: bool | None = None,
) -> GenerationReport:
    """Generate one mp4 per prompt and write ``generation.json`` + the resolved config into ``output_dir``.

    Args are those of :func:`plan_generation`; ``device`` is where the models run; ``compile``
    torch.compiles the student (None: on for CUDA only, ``stream_r1.models.compile.resolve_compile``).

    Returns:
        The :class:`GenerationReport` (also written as ``output_dir/generation.json``).
    """
    dev = resolve_device(device)
    plan = plan_generation(cfg, checkpoint, prompts, num_frames, output_dir, use_ema, seed, ema_fallback=ema_fallback)
    from stream_r1.sample.streaming_video import StudentStreamer

    if cfg.model.attention_backend == "flash":
        check_flash_available(dev)  # before any model loads
    start = time.perf_counter()
    streamer = StudentStreamer.load(cfg, plan, dev, compile=resolve_compile(compile, dev))
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    write_resolved_config(cfg, plan.output_dir)
    report = GenerationReport(
        output_dir=plan.output_dir,
        results=[],
        config_hash=config_hash(cfg),
        checkpoint=str(plan.checkpoint) if plan.checkpoint else None,
        use_ema=plan.use_ema,
        num_latent_frames=plan.num_frames,
        device=str(dev),
    )
    width = max(3, len(str(len(plan.prompts) - 1)))
    for i, prompt in enumerate(progress(plan.prompts, desc="videos", total=len(plan.prompts))):
        path = plan.output_dir / f"video_{i:0{width}d}.mp4"
        report.results.append(streamer.generate_video(prompt, path, plan.num_frames, seed=plan.seed + i))
    report.total_seconds = time.perf_counter() - start
    atomic_write_json(plan.output_dir / GENERATION_FILE, report.to_dict())
    logger.info("generated %d videos at %.2f FPS into %s", len(report.results), report.fps, plan.output_dir)
    return report
