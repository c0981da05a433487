"""Why the shapes world's VAE blurs: single-frame autoencoders at 2x, 4x and 8x spatial compression.

Diagnostic for the world's VAE (docs/benchmarks.md "Shapes world"). It trains, on single frames of
the teacher's training clips (the VAE's image phase, ``stream_r1.shapes.vae``), either

* ``--model wan``: the world's ``AutoencoderKLWan`` (``VAE_CONFIG``, width ``--base-dim``, the
  frame-wise initialisation, its decode clamped to [-1, 1] as diffusers does), or
* ``--model plain``: a probe that is *not* used by the world, a plain convolutional autoencoder
  (``--down`` stride-2 levels of ``--width`` channels, 16 latent channels), to tell what the
  compression itself costs from what the Wan architecture costs,

with the object-weighted squared error on the clamped decode (``--loss mse``, the VAE recipe before
64 px frames) or the one-sided error on the unclamped output (``--loss clamp_aware``, the recipe's
``clamp_aware_error``: overshooting a saturated target, -1 or 1, counts as no error; with
``--black-bias`` the last convolution starts at a black output, as the recipe's does). Every ``--eval-every`` steps it reports, on 72 held-out frames (frames 0, 4 and 8 of
24 held-out clean clips, each encoded alone), the PSNR of whole frames and of the dilated object box
(``reconstruction_psnr``'s rule) and the world's detectors on the decodes: colour and shape accuracy
and the median sharpness (clean renders 0.68-0.88, blurred 0.30-0.33; degraded below 0.45)::

    .venv/bin/python benchmarks/shapes_vae_probe.py --model plain --down 3 --steps 600 --seed 0
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diffusers import AutoencoderKLWan  # noqa: E402

from stream_r1.models.vae_norm import use_channel_rms_norm  # noqa: E402
from stream_r1.shapes.data import held_out_clips, render_clips, teacher_clips  # noqa: E402
from stream_r1.shapes.detect import measure  # noqa: E402
from stream_r1.shapes.vae import (  # noqa: E402
    MEAN_PENALTY,
    OBJECT_WEIGHT,
    VAE_CONFIG,
    clamp_aware_error,
    decode_unclamped,
    framewise_init_,
)
from stream_r1.shapes.world import parse_prompt  # noqa: E402

SIDE = 32
"""Default frame side (``--side``)."""
CLIP_FRAMES = 9
"""Pixel frames of the held-out clips (frames 0, 4 and 8 are evaluated)."""


class PlainAE(nn.Module):
    """Probe only: ``down`` stride-2 convolutions to 16 channels and back (nearest upsampling), SiLU, no norms."""

    def __init__(self, down: int, width: int, z_dim: int = 16) -> None:
        super().__init__()
        enc: list[nn.Module] = [nn.Conv2d(3, width, 3, 1, 1), nn.SiLU()]
        dec: list[nn.Module] = [nn.Conv2d(z_dim, width, 3, 1, 1), nn.SiLU()]
        for _ in range(down):
            enc += [nn.Conv2d(width, width, 4, 2, 1), nn.SiLU()]
            dec += [nn.Upsample(scale_factor=2), nn.Conv2d(width, width, 3, 1, 1), nn.SiLU()]
        self.encoder = nn.Sequential(*enc, nn.Conv2d(width, z_dim, 3, 1, 1))
        self.decoder = nn.Sequential(*dec, nn.Conv2d(width, width, 3, 1, 1), nn.SiLU(), nn.Conv2d(width, 3, 3, 1, 1))
        self.conv_out = self.decoder[-1]

    def roundtrip(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(latent, unclamped decode, clamped decode)`` of ``x [B, 3, 1, H, W]`` (decodes ``[B, 3, 1, H, W]``)."""
        z = self.encoder(x[:, :, 0])
        raw = self.decoder(z).unsqueeze(2)
        return z, raw, raw.clamp(-1, 1)


class WanProbe(nn.Module):
    """The world's ``AutoencoderKLWan`` with a forward hook that keeps the decoder's unclamped output."""

    def __init__(self, base_dim: int, decoder_base_dim: int | None = None) -> None:
        super().__init__()
        self.vae = AutoencoderKLWan(**{**VAE_CONFIG, "base_dim": base_dim, "decoder_base_dim": decoder_base_dim})
        use_channel_rms_norm(self.vae)
        framewise_init_(self.vae)
        self.conv_out = self.vae.decoder.conv_out

    def roundtrip(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(posterior mean, unclamped decode, diffusers' clamped decode)`` of ``x [B, 3, T, H, W]``."""
        mu = self.vae.encode(x).latent_dist.mode()
        raw = decode_unclamped(self.vae, mu)
        return mu, raw, raw.clamp(-1, 1)


def _loss(kind: str, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    z, raw, clamped = model.roundtrip(x)
    if kind == "mse":
        w = 1.0 + (OBJECT_WEIGHT - 1.0) * (x.amax(dim=1, keepdim=True) > -0.5).float()
        err = (w * (clamped - x) ** 2).mean() / w.mean()
    else:
        err = clamp_aware_error(raw, x)
    return err + MEAN_PENALTY * (z**2).mean()


@torch.no_grad()
def _evaluate(model: nn.Module, frames: torch.Tensor, prompts: list[str]) -> dict[str, float]:
    model.eval()
    recon = model.roundtrip(frames)[2]
    model.train()
    err = (recon - frames) ** 2
    lit = (frames.amax(dim=1, keepdim=True) > -0.5).float()
    box = nn.functional.max_pool3d(lit, (1, 5, 5), 1, (0, 2, 2)).expand_as(err) > 0
    color = shape = 0
    sharp = []
    for r, p in zip(recon, prompts, strict=True):
        m = measure(r.permute(1, 0, 2, 3))
        c, s, _ = parse_prompt(p)
        color += m.color == c
        shape += m.shape == s
        sharp.append(m.sharpness)
    n = len(prompts)
    return {
        "psnr": round(10 * math.log10(4 / float(err.mean())), 2),
        "psnr_object": round(10 * math.log10(4 / float(err[box].mean())), 2),
        "color": round(color / n, 3),
        "shape": round(shape / n, 3),
        "sharpness_median": round(sorted(sharp)[n // 2], 3),
    }


def main(argv: list[str] | None = None) -> int:
    """Train one probe and print one JSON line per evaluation."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("wan", "plain"), default="wan")
    ap.add_argument("--base-dim", type=int, default=8, help="wan: base_dim")
    ap.add_argument("--decoder-base-dim", type=int, default=None, help="wan: decoder_base_dim (default: base_dim)")
    ap.add_argument("--down", type=int, default=3, help="plain: stride-2 levels (3 = the Wan VAE's 8x)")
    ap.add_argument("--width", type=int, default=32, help="plain: channels")
    ap.add_argument("--loss", choices=("mse", "clamp_aware"), default="mse")
    ap.add_argument("--black-bias", action="store_true", help="last convolution's bias starts at -1 (black)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3, help="peak of a cosine over --steps (AdamW)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--side", type=int, default=SIDE, help="frame side in pixels (a multiple of 8)")
    args = ap.parse_args(argv)
    if args.side < 8 or args.side % 8:
        print(f"shapes_vae_probe: --side {args.side} must be a positive multiple of 8, e.g. 64", file=sys.stderr)
        return 2
    if min(args.steps, args.batch, args.eval_every, args.threads, args.base_dim, args.width) < 1 or args.down < 0:
        print("shapes_vae_probe: --steps, --batch, --eval-every, --threads, --base-dim, --width must be >= 1 "
              "and --down >= 0", file=sys.stderr)  # fmt: skip
        return 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = WanProbe(args.base_dim, args.decoder_base_dim) if args.model == "wan" else PlainAE(args.down, args.width)
    if args.black_bias:
        with torch.no_grad():
            model.conv_out.bias.fill_(-1.0)
    pool = teacher_clips(8, 0.4, args.seed)
    held = held_out_clips(2)
    side = args.side
    frames = render_clips(held, CLIP_FRAMES, side)[:, ::4].reshape(-1, 1, 3, side, side).permute(0, 2, 1, 3, 4)
    prompts = [c.prompt for c in held for _ in range(frames.shape[0] // len(held))]
    g = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / args.steps)))
    t0 = time.perf_counter()
    for step in range(args.steps):
        clips = [pool[(step * args.batch + i) % len(pool)] for i in range(args.batch)]
        video = render_clips(clips, 5, side)
        pick = torch.randint(0, 5, (len(clips),), generator=g)
        x = video[torch.arange(len(clips)), pick].unsqueeze(2)  # [B, 3, 1, S, S]
        loss = _loss(args.loss, model, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            row = {"step": step + 1, **_evaluate(model, frames, prompts), "seconds": round(time.perf_counter() - t0)}
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
