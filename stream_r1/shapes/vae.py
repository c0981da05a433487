"""A tiny Wan VAE (diffusers ``AutoencoderKLWan``) trained on shapes-world clips.

Reconstruction loss is a squared error weighted towards the object (it covers about 8% of a frame, so
plain MSE would be satisfied by a black frame), read on the decoder's output before diffusers' clamp
(:func:`clamp_aware_error`; the last convolution starts at a black output), on decodes of the posterior
*mean*, plus a small penalty on its
size: the Wan VAE starts with posterior std ~1, as large as the signal, and sampling from it would
spend the CPU budget on shrinking that noise (the diffusion models only ever use the mean,
``WanVAE.encode``). Afterwards the per-channel latent mean and
std of the training clips are written into the config (``latents_mean`` / ``latents_std``), as the
real Wan VAE ships them, so :class:`stream_r1.models.vae.WanVAE` latents are roughly unit-scaled.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, WanResample

from stream_r1.models.vae import WanVAE
from stream_r1.models.vae_conv import use_first_frame_convs
from stream_r1.models.vae_norm import use_channel_rms_norm
from stream_r1.shapes.data import DEGRADED_MODES, Clip, held_out_clips, render_clips
from stream_r1.shapes.metrics import aggregate, score_video
from stream_r1.utils.progress import progress

VAE_CONFIG: dict[str, object] = {
    "base_dim": 4,
    "z_dim": 16,
    "dim_mult": [1, 2, 2, 2],
    "num_res_blocks": 1,
    "temperal_downsample": [False, True, True],
}
"""Compression 4 (time) x 8 x 8 (space), 16 latent channels: Wan2.1's geometry at a tiny width."""
OBJECT_WEIGHT = 10.0
"""Loss weight of object pixels relative to the black background."""
CHROMA_WEIGHT = 1.0
"""Extra weight of the red-minus-green part of the pixel error (:func:`clamp_aware_error`). Seen from black,
the palette's largest direction is red + green (yellow is both), so the image phase learns "yellowness"
first, and at some seeds never separates red from green: at seeds 2 and 3 of the ci world every red and
green object decoded as yellow, in single frames too (round-trip colour 0.50). Weighting that difference
(a red object drawn yellow costs 4x its plain error) gave 1.00 at both (docs/benchmarks.md "Shapes world",
"VAE colour")."""
MEAN_PENALTY = 1.0e-4
"""Weight of the penalty on the size of the posterior mean."""
LR = 3.0e-3
"""Peak learning rate of the image phase."""
CLIP_LR = 3.0e-4
"""Peak learning rate of the clip phase. Each phase has its own cosine: under one cosine over both
phases the clip phase sat at its tail (a 1500 + 20 step build gave its 20 clip steps under 1.3e-6, so the
temporal kernels never moved from their initialisation). After an image phase the clip phase trains
only the temporal kernels (:func:`temporal_kernels`): trained whole at 1e-3 on 5-frame clips it lowered
every frame's PSNR by 3-4 dB (docs/benchmarks.md "Shapes world")."""


def phase_lr(step: int, image_steps: int, steps: int) -> float:
    """Learning rate of ``step``: a cosine from :data:`LR` over the image phase, then one from :data:`CLIP_LR`."""
    if step < image_steps:
        return LR * 0.5 * (1 + math.cos(math.pi * step / image_steps))
    return CLIP_LR * 0.5 * (1 + math.cos(math.pi * (step - image_steps) / max(1, steps)))


def clamp_aware_error(raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Object-weighted squared error of the decoder's *unclamped* output ``raw`` against ``target`` in [-1, 1].

    diffusers clamps every decode to [-1, 1], so a loss on the clamped decode gives a pixel on the wrong side
    of the clamp no gradient at all (a dark object pixel whose output sits below -1 can never brighten).
    On the unclamped output, overshooting a saturated target (-1 black, or a colour channel at 1) is no
    error, because the clamp removes it: the error is one-sided there and two-sided in between (edges).
    """
    d = raw - target
    d = torch.where(target >= 1, d.clamp(max=0), torch.where(target <= -1, d.clamp(min=0), d))
    w = 1.0 + (OBJECT_WEIGHT - 1.0) * (target.amax(dim=1, keepdim=True) > -0.5).float()
    red_minus_green = d[:, 0:1] - d[:, 1:2]
    return ((w * d**2).mean() + CHROMA_WEIGHT * (w * red_minus_green**2).mean()) / w.mean()


def decode_unclamped(vae: AutoencoderKLWan, z: torch.Tensor) -> torch.Tensor:
    """``vae.decode(z)`` before diffusers' final clamp to [-1, 1] (``[B, 3, T, H, W]``).

    A forward hook on the decoder keeps the output of each of its per-latent-frame calls, which
    ``AutoencoderKLWan._decode`` concatenates along time before clamping.
    """
    raw: list[torch.Tensor] = []
    handle = vae.decoder.register_forward_hook(lambda _m, _i, out: raw.append(out))
    try:
        vae.decode(z)
    finally:
        handle.remove()
    return torch.cat(raw, dim=2)


def autoencode_frames(vae: AutoencoderKLWan, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(decode_unclamped(vae, mu), mu)`` of single frames ``x [B, 3, 1, H, W]``, ``mu`` the posterior mean.

    The same operations on the same values as ``vae.encode`` / ``vae.decode`` (bit-identical outputs and
    gradients), without their causal caches: on one frame diffusers' chunk loop runs once, every cached
    convolution sees its zero padding (the cache starts empty) and the temporal resamplers skip their time
    convolution either way, so the caches' clones and bookkeeping are pure cost (2-6 % of an image-phase
    step's forward and backward, docs/benchmarks.md "Shapes world", "where a build's time goes").

    Raises:
        ValueError: ``x`` has more than one frame, or the VAE patchifies (Wan2.2's layout).
    """
    if x.shape[2] != 1 or vae.config.patch_size is not None:
        raise ValueError(f"autoencode_frames takes single frames of an unpatchified VAE, got {tuple(x.shape)}")
    mu = vae.quant_conv(vae.encoder(x))[:, : vae.config.z_dim]
    return vae.decoder(vae.post_quant_conv(mu), first_chunk=True), mu


@torch.no_grad()
def framewise_init_(vae: AutoencoderKLWan) -> AutoencoderKLWan:
    """Make a fresh Wan VAE act frame by frame, so single frames can train it first.

    Every causal 3-D convolution keeps only its current-frame kernel slice (the two past slices are
    zeroed: on a single frame they only ever see the causal zero padding, so they would get no
    gradient anyway); the temporal downsamplers pick the newest frame of their window and the
    temporal upsamplers interpolate: of the two output frames of input frame ``t`` the second is
    ``t`` itself and the first the mean of ``t - 1`` and ``t``. Two of them in a row turn latent
    frames ``k - 1, k`` into 4 pixel frames mixing them ``(3/4, 1/4), (1/2, 1/2), (1/4, 3/4), (0, 1)``,
    so the object's path starts close to a line. (Copying each frame makes a staircase, 4 equal
    frames then a jump, which the smoothness detector rightly calls jitter: path RMS 0.058 of the
    side on held-out 9-frame clips, 0.032 with this init before any video step. The first chunk
    after frame 0 only fades in: diffusers' decode gives that chunk's upsampler zero padding, not
    frame 0.) The video phase then learns the real temporal kernels from there.
    """
    for m in vae.modules():
        if isinstance(m, WanCausalConv3d) and m.weight.shape[2] == 3:
            m.weight[:, :, :2].zero_()
    for m in vae.modules():  # after the loop above, which would zero the resamplers' past slices too
        if isinstance(m, WanResample) and hasattr(m, "time_conv"):
            w = m.time_conv.weight  # [out, in, 3, 1, 1]
            w.zero_()
            m.time_conv.bias.zero_()
            eye = torch.eye(w.shape[1])
            if m.mode == "upsample3d":  # out = 2 * in: output frames 2t (first half) and 2t + 1
                w[: w.shape[1], :, 1, 0, 0] = 0.5 * eye
                w[: w.shape[1], :, 2, 0, 0] = 0.5 * eye
                w[w.shape[1] :, :, 2, 0, 0] = eye
            else:
                w[:, :, 2, 0, 0] = eye
    return vae


def temporal_kernels(vae: AutoencoderKLWan) -> dict[torch.nn.Parameter, torch.Tensor]:
    """The weights only clips can train, each with a 0/1 mask of its temporal part (same shape).

    Those are the past-frame slices of every causal 3-D convolution (on single frames they see only
    the causal zero padding) and the whole temporal convolution of each temporal resampler. Training
    just these on clips keeps what the image phase learnt about single frames.
    """
    masks: dict[torch.nn.Parameter, torch.Tensor] = {}
    for m in vae.modules():
        if isinstance(m, WanResample) and hasattr(m, "time_conv"):
            masks[m.time_conv.weight] = torch.ones_like(m.time_conv.weight)
            masks[m.time_conv.bias] = torch.ones_like(m.time_conv.bias)
    for m in vae.modules():
        if isinstance(m, WanCausalConv3d) and m.weight.shape[2] == 3 and m.weight not in masks:
            mask = torch.zeros_like(m.weight)
            mask[:, :, :2] = 1.0
            masks[m.weight] = mask
    return masks


def object_crops(x: torch.Tensor, crop: int, generator: torch.Generator) -> torch.Tensor:
    """8-aligned ``crop`` x ``crop`` windows of ``x [B, T, 3, S, S]`` that hold the object's middle-frame centre.

    The VAE is convolutional (its middle attention block is per frame), so it trains on windows
    around the object at a quarter of the cost of whole frames and then runs on whole frames. Every
    second window is placed uniformly instead, so the mostly black parts of whole frames are seen too.
    """
    b, t, _, s, _ = x.shape
    if crop >= s:
        return x
    lit = (x[:, t // 2].amax(dim=1) > -0.5).float()  # [B, S, S]
    grid = torch.arange(s, dtype=torch.float32)
    mass = lit.sum(dim=(1, 2)).clamp_min(1)
    cy = (lit.sum(dim=2) * grid).sum(dim=1) / mass
    cx = (lit.sum(dim=1) * grid).sum(dim=1) / mass
    out = []
    for i in range(b):
        if i % 2:
            y0, x0 = (int(v) * 8 for v in torch.randint(0, (s - crop) // 8 + 1, (2,), generator=generator))
        else:
            jitter = torch.randint(-crop // 4, crop // 4 + 1, (2,), generator=generator)
            y0 = int(((cy[i] - crop / 2 + jitter[0]) / 8).round().clamp(0, (s - crop) // 8)) * 8
            x0 = int(((cx[i] - crop / 2 + jitter[1]) / 8).round().clamp(0, (s - crop) // 8)) * 8
        out.append(x[i, :, :, y0 : y0 + crop, x0 : x0 + crop])
    return torch.stack(out)


class _RenderCache:
    """``render_clips`` that renders each clip once (the build draws every step's clips from a fixed pool).

    Rendering was about a tenth of an image step (all ``frames`` frames of a clip are drawn to pick one). Bounded
    (least recently used out first), so a callable that does draw fresh clips every step only pays the lookup.
    """

    def __init__(self, frames: int, size: int, capacity: int = 1024) -> None:
        self.frames, self.size, self.capacity = frames, size, capacity
        self.clips: OrderedDict[Clip, torch.Tensor] = OrderedDict()

    def __call__(self, clips: list[Clip]) -> torch.Tensor:
        """``[N, T, 3, size, size]`` pixels of ``clips`` (the same values as :func:`render_clips`)."""
        out = []
        for c in clips:
            if c in self.clips:
                self.clips.move_to_end(c)
            else:
                self.clips[c] = render_clips([c], self.frames, self.size)[0]
                if len(self.clips) > self.capacity:
                    self.clips.popitem(last=False)
            out.append(self.clips[c])
        return torch.stack(out)


def train_vae(
    clips: Callable[[int], list[Clip]],
    steps: int,
    batch: int,
    frames: int,
    size: int,
    seed: int,
    *,
    image_steps: int = 0,
    image_batch: int = 16,
    crop: int = 16,
) -> AutoencoderKLWan:
    """Train a tiny Wan VAE: ``image_steps`` on single frames (:func:`framewise_init_`), then ``steps`` on clips.

    Args:
        clips: ``step -> batch of clips`` (fresh clips each step: the world is infinite).
        steps, batch: Video-phase budget.
        frames, size: Clip geometry of the video phase (``frames = 1 + 4k``).
        seed: Initialisation seed.
        image_steps, image_batch: Image-phase budget (one random frame of each clip; a frame costs a
            fifth of a 5-frame clip, so this phase buys most of the reconstruction quality).
        crop: Side of the training windows (:func:`object_crops`; >= ``size`` trains on whole frames).

    Returns:
        The trained VAE (eval mode) with ``latents_mean`` / ``latents_std`` of its training clips.
    """
    g = torch.Generator().manual_seed(seed)
    renders = _RenderCache(frames, size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKLWan(**VAE_CONFIG)
        use_channel_rms_norm(vae)  # ~3x faster norm forward + backward on CPU, same function
        use_first_frame_convs(vae)  # the image phase's single frames skip the zero-padding taps
        if image_steps:
            framewise_init_(vae)
        with torch.no_grad():  # start at a black frame, the background (the colour must be learnt, not unlearnt)
            vae.decoder.conv_out.bias.fill_(-1.0)
        total = image_steps + steps
        vae.train()
        for step in progress(range(total), desc="vae (steps)", total=total):
            if step in (0, image_steps):
                # A fresh optimizer per phase: Adam's second moments of the temporal kernels' past
                # slices are ~0 after the image phase (single frames give them no gradient), so
                # carried-over state makes the first clip steps huge (measured: round-trip
                # direction accuracy fell from 1.0 to 0.5 in the ci build).
                masks = temporal_kernels(vae) if step == image_steps > 0 else {}
                for p in vae.parameters():
                    p.requires_grad_(not masks or p in masks)
                params = [p for p in vae.parameters() if p.requires_grad]
                # foreach=True: single-tensor AdamW's update to the bit (the same VAE weights, max difference 0.0
                # after 70 steps), ~13 % less time over this VAE's many small tensors. Not fused=True: it changes
                # the latents' rounding, and with them the teacher's result (teacher.py).
                opt = torch.optim.AdamW(params, lr=1.0, weight_decay=0.0, foreach=True)
                sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s, s0=step: phase_lr(s0 + s, image_steps, steps))
            if step < image_steps:
                pool = [c for k in range(-(-image_batch // batch)) for c in clips(step * 7 + k)][:image_batch]
                video = renders(pool)
                pick = torch.randint(0, frames, (len(pool),), generator=g)
                video = video[torch.arange(len(pool)), pick].unsqueeze(1)
            else:
                video = renders(clips(step))
            x = object_crops(video, crop, g).permute(0, 2, 1, 3, 4)  # [B, 3, T, h, w]
            if step < image_steps:
                raw, mu = autoencode_frames(vae, x)
            else:
                mu = vae.encode(x).latent_dist.mode()
                raw = decode_unclamped(vae, mu)
            loss = clamp_aware_error(raw, x) + MEAN_PENALTY * (mu**2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for p, mask in masks.items():
                p.grad.mul_(mask)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
        vae.eval().requires_grad_(True)
        with torch.no_grad():
            x = render_clips(clips(steps), frames, size).permute(0, 2, 1, 3, 4)
            mu = vae.encode(x).latent_dist.mode()  # [B, C, F, H, W]
            mean = mu.mean(dim=(0, 2, 3, 4))
            std = mu.std(dim=(0, 2, 3, 4)).clamp_min(1e-3)
    out = AutoencoderKLWan(**VAE_CONFIG, latents_mean=mean.tolist(), latents_std=std.tolist())
    out.load_state_dict(vae.state_dict())
    return out.eval()


@torch.no_grad()
def reconstruction_psnr(vae: WanVAE, pixels: torch.Tensor) -> dict[str, float]:
    """PSNR (dB, peak-to-peak 2 on [-1, 1]) of encode-decode over ``pixels [N, T, 3, H, W]``.

    Returns:
        ``{"psnr": whole frames, "psnr_object": only pixels inside the dilated object box}``.
    """
    recon = vae.decode(vae.encode(pixels)).clamp(-1, 1)
    err = (recon - pixels) ** 2
    mask = pixels.amax(dim=2, keepdim=True) > -0.5
    mask = torch.nn.functional.max_pool3d(mask.float().squeeze(2), (1, 5, 5), 1, (0, 2, 2)).unsqueeze(2) > 0
    mask = mask.expand_as(err)

    def psnr(mse: float) -> float:
        return 10 * math.log10(4.0 / max(mse, 1e-12))

    return {"psnr": psnr(float(err.mean())), "psnr_object": psnr(float(err[mask].mean()))}


@torch.no_grad()
def roundtrip_scores(vae: WanVAE, frames: int, size: int, per_prompt: int = 1) -> dict[str, dict[str, float]]:
    """World scores of encode-decode round trips of held-out clips, per rendering mode.

    A VAE fit for the world keeps what the detectors read: round trips of clean clips are not
    ``degraded`` and those of each degraded mode are, with colour, shape and direction intact.

    Args:
        vae: The world's VAE.
        frames, size: Clip geometry (pixel frames, side).
        per_prompt: Clips per held-out prompt and mode.

    Returns:
        ``{mode: aggregate scores}`` for ``clean`` and every mode of :data:`DEGRADED_MODES`
        (``degraded`` is the fraction of round trips the detectors flag).
    """
    out = {}
    for mode in ("clean", *DEGRADED_MODES):
        clips = held_out_clips(per_prompt, mode)
        recon = vae.decode(vae.encode(render_clips(clips, frames, size)))
        out[mode] = aggregate(score_video(r, c.prompt) for r, c in zip(recon, clips, strict=True))
    return out
