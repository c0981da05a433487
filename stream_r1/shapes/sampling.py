"""Videos from the world's models, in memory, scored by the ground truth and by VideoReward.

The teacher samples with the project's CFG Euler sampler (:func:`stream_r1.train.ode_pairs.teacher_trajectory`),
the student with the streaming rollout every ``stream-r1 generate`` uses
(:func:`stream_r1.rollout.streaming.stream_chunks`); both decode with the world's Wan VAE. Frames stay
tensors (no mp4 round trip), so the detectors see exactly what the models made.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from stream_r1.config.derived import checkpoint_path
from stream_r1.config.schema import RunConfig
from stream_r1.method.build import (
    load_score_transformer,
    load_student_transformer,
    student_denoiser,
    trajectory_teacher,
)
from stream_r1.models.vae import WanVAE
from stream_r1.reward.model import VideoRewardModel
from stream_r1.reward.preprocess import PreprocessOptions
from stream_r1.reward.prompt import REWARD_AXES
from stream_r1.rollout.self_forcing import student_timesteps
from stream_r1.rollout.streaming import stream_chunks
from stream_r1.shapes.metrics import aggregate, score_video
from stream_r1.train.build import build_text_pipeline
from stream_r1.train.ode_pairs import teacher_trajectory
from stream_r1.utils.seeding import make_rng


@dataclass
class SampledVideos:
    """Videos of one model.

    Attributes:
        prompts: Prompt of each video.
        frames: ``[T, 3, H, W]`` per video in [-1, 1].
        seconds: Wall time of sampling + decoding (all videos).
    """

    prompts: list[str]
    frames: list[torch.Tensor] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def fps(self) -> float:
        """Pixel frames per second of wall time."""
        n = sum(f.shape[0] for f in self.frames)
        return n / self.seconds if self.seconds > 0 else 0.0


def _text(cfg: RunConfig, cache_dir: Path) -> tuple[object, torch.Tensor]:
    cache, negative = build_text_pipeline(cfg, cache_dir, torch.device("cpu"))
    return cache, negative.get()


@torch.no_grad()
def sample_teacher(cfg: RunConfig, prompts: list[str], seed: int, cache_dir: Path) -> SampledVideos:
    """Multi-step CFG samples of ``checkpoints.teacher`` (``ode`` section: steps, shift, guidance)."""
    den = trajectory_teacher(cfg, load_score_transformer(cfg, "teacher", dtype=torch.float32, device="cpu"))
    vae = WanVAE.from_pretrained(checkpoint_path(cfg, "vae"))
    cache, neg = _text(cfg, cache_dir)
    r = cfg.rollout
    out = SampledVideos(list(prompts))
    start = time.perf_counter()
    for i, p in enumerate(prompts):
        g = make_rng(seed, "shapes-sample", i)
        noise = torch.randn((1, cfg.eval.num_frames, r.latent_channels, r.latent_height, r.latent_width), generator=g)
        states = teacher_trajectory(den, noise, cache.get([p]), neg, cfg.ode)  # type: ignore[attr-defined]
        out.frames.append(vae.decode(states[:, -1])[0])
    out.seconds = time.perf_counter() - start
    return out


@torch.no_grad()
def sample_student(
    cfg: RunConfig, checkpoint: str | Path | None, prompts: list[str], seed: int, cache_dir: Path, use_ema: bool = False
) -> SampledVideos:
    """Few-step streaming samples of a student checkpoint (``None`` = ``checkpoints.student_init``)."""
    ckpt = checkpoint_path(cfg, "student_init") if checkpoint is None else Path(checkpoint)
    den = student_denoiser(cfg, load_student_transformer(cfg, ckpt, use_ema=use_ema, dtype=torch.float32, device="cpu"))
    vae = WanVAE.from_pretrained(checkpoint_path(cfg, "vae"))
    cache, _ = _text(cfg, cache_dir)
    r = cfg.rollout
    out = SampledVideos(list(prompts))
    start = time.perf_counter()
    for i, p in enumerate(prompts):
        g = make_rng(seed, "shapes-sample", i)
        chunks = stream_chunks(
            den,
            cache.get([p]),  # type: ignore[attr-defined]
            num_frames=cfg.eval.num_frames,
            latent_shape=(r.latent_channels, r.latent_height, r.latent_width),
            timesteps=student_timesteps(cfg.rollout),
            rng=g,
            rolling=cfg.model.local_attn_frames != -1,
            context_t=float(r.context_noise),
        )
        stream = vae.new_stream()
        out.frames.append(torch.cat([stream.push(c.x0)[0] for c in chunks]))
    out.seconds = time.perf_counter() - start
    return out


def score_videos(
    videos: SampledVideos, reward: VideoRewardModel | None = None, opts: PreprocessOptions | None = None
) -> dict[str, float]:
    """Mean GT scores (and VideoReward z-scores per axis when ``reward`` is given) plus FPS."""
    rows = []
    for frames, prompt in zip(videos.frames, videos.prompts, strict=True):
        row = score_video(frames, prompt)
        if reward is not None:
            z = reward.score(frames, prompt, opts).z
            row.update({f"reward_{a}": z[a] for a in REWARD_AXES})
        rows.append(row)
    return {**aggregate(rows), "fps": videos.fps}
