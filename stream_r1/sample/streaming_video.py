"""One loaded student + text encoder + VAE that turns a prompt into an mp4, chunk by chunk (docs/method.md §1.11).

Latency is measured per chunk: the transformer part (4 denoising steps + the context pass, inside
:func:`stream_r1.rollout.streaming.stream_chunks`) and the streaming VAE decode of that chunk.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from stream_r1.config.derived import pixel_frames
from stream_r1.method.build import load_student_transformer, student_denoiser
from stream_r1.models.compile import compile_student
from stream_r1.models.denoiser import CausalDenoiser
from stream_r1.models.text_encoder import TextEncoder
from stream_r1.models.vae import WanVAE
from stream_r1.rollout.self_forcing import student_timesteps
from stream_r1.rollout.streaming import stream_chunks
from stream_r1.sample.video_io import Mp4Writer
from stream_r1.utils.dtypes import torch_dtype
from stream_r1.utils.progress import progress

if TYPE_CHECKING:
    from stream_r1.config.schema import RunConfig
    from stream_r1.sample.generate import GenerationPlan, VideoResult

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StudentStreamer:
    """Loaded models for streaming generation.

    Args:
        cfg: Run config.
        denoiser: The student.
        text_encoder: umT5 encoder.
        vae: Wan VAE.
        device: Where everything runs.
    """

    def __init__(
        self, cfg: RunConfig, denoiser: CausalDenoiser, text_encoder: TextEncoder, vae: WanVAE, device: torch.device
    ) -> None:
        self.cfg = cfg
        self.denoiser = denoiser
        self.text_encoder = text_encoder
        self.vae = vae
        self.device = device
        self.dtype = torch_dtype(cfg.model.dtype)

    @classmethod
    def load(
        cls, cfg: RunConfig, plan: GenerationPlan, device: torch.device, *, compile: bool = False
    ) -> StudentStreamer:
        """Load text encoder, VAE and student (base architecture + checkpoint) as the plan says; ``compile``
        compiles the student for streaming (``stream_r1.models.compile``)."""
        dtype = torch_dtype(cfg.model.dtype)
        text = TextEncoder.from_pretrained(
            plan.paths["text_encoder"], plan.paths["tokenizer"], cfg.model.text_len_tokens, dtype=dtype, device=device
        )
        vae = WanVAE.from_pretrained(plan.paths["vae"], dtype=dtype, device=device)
        student = load_student_transformer(cfg, plan.checkpoint, use_ema=plan.use_ema, dtype=dtype, device=device)
        if compile:
            compile_student(student)
        return cls(cfg, student_denoiser(cfg, student), text, vae, device)

    @torch.no_grad()
    def generate_video(self, prompt: str, path: Path, num_frames: int, *, seed: int) -> VideoResult:
        """Stream one video into ``path`` (mp4, ``eval.fps``) and return its timings."""
        from stream_r1.sample.generate import VideoResult

        cfg, dev = self.cfg, self.device
        text_emb = self.text_encoder.encode([prompt]).to(dev, self.dtype)
        rng = torch.Generator(device=dev).manual_seed(seed)
        result = VideoResult(path, prompt, seed, num_frames, pixel_frames(num_frames))
        decoder = self.vae.new_stream()
        num_chunks = num_frames // cfg.model.frames_per_block
        _sync(dev)
        t_video = time.perf_counter()
        with Mp4Writer(path, fps=cfg.eval.fps) as writer:
            chunks = stream_chunks(
                self.denoiser,
                text_emb,
                num_frames=num_frames,
                latent_shape=(cfg.rollout.latent_channels, cfg.rollout.latent_height, cfg.rollout.latent_width),
                timesteps=student_timesteps(cfg.rollout),
                rng=rng,
                rolling=cfg.model.local_attn_frames != -1,
                dtype=self.dtype,
                device=dev,
                context_t=float(cfg.rollout.context_noise),
            )
            for chunk in progress(chunks, desc="chunks", total=num_chunks):
                t_decode = time.perf_counter()
                writer.write(decoder.push(chunk.x0)[0])
                _sync(dev)
                decode_ms = 1000.0 * (time.perf_counter() - t_decode)
                result.chunk_denoise_ms.append(chunk.latency_ms)
                result.chunk_latency_ms.append(chunk.latency_ms + decode_ms)
        result.seconds = time.perf_counter() - t_video
        result.fps = result.num_pixel_frames / result.seconds if result.seconds > 0 else 0.0
        if writer.num_frames != result.num_pixel_frames:
            raise RuntimeError(f"wrote {writer.num_frames} frames to {path}, expected {result.num_pixel_frames}")
        return result
