"""The bidirectional teacher of the shapes world: a tiny ``WanTransformer3DModel`` trained by flow matching.

Training pairs are VAE latents of the mixture training set (clean and degraded clips under the same
prompts, :func:`stream_r1.shapes.data.teacher_clips`), so the teacher learns good and bad modes.
Loss: ``|| v_theta(x_t, t, c) - (eps - x0) ||^2`` with ``x_t = (1 - sigma) x0 + sigma eps``
(:mod:`stream_r1.diffusion`), ``sigma`` uniform in (0, 1) then shifted (the high-noise end is where
the layout of the video is decided). The prompt is replaced by the negative prompt's embedding with
probability :data:`P_UNCOND`, so the same network gives the unconditional score that CFG needs
(the project's teachers use the negative prompt as their unconditional input).
"""

from __future__ import annotations

import math

import torch
from diffusers import WanTransformer3DModel

from stream_r1.diffusion.flow_matching import shift_sigma
from stream_r1.models.denoiser import BidirectionalDenoiser
from stream_r1.shapes.world import parse_prompt
from stream_r1.utils.progress import progress

P_UNCOND = 0.15
TRAIN_SHIFT = 3.0
"""Shift of the training sigma distribution."""
LR = 1.0e-3
"""Peak learning rate of each phase (AdamW, warm-up, then cosine or constant: :func:`train_teacher`)."""
HEAD_DIM = 32
PATCH_SIZE = (1, 2, 2)
LATENT_CHANNELS = 16
ORDER_DIRECTIONS = ("right", "down")
"""Directions of the clips of the teacher's first phase (:func:`train_world_teacher`): two orthogonal ones, so
the frame-dependent layout they share (the object top-left first, bottom-right last) pays without the word."""


def token_input_dim(patch_size: tuple[int, int, int] = PATCH_SIZE, channels: int = LATENT_CHANNELS) -> int:
    """Numbers one token carries in (and the flow it predicts out): ``channels x p_t x p_h x p_w`` (64 here)."""
    p_t, p_h, p_w = patch_size
    return channels * p_t * p_h * p_w


def teacher_config(
    dim: int, layers: int, text_dim: int, patch_size: tuple[int, int, int] = PATCH_SIZE
) -> dict[str, object]:
    """Config of the tiny teacher (by default patch 1x2x2 over 16 latent channels, like Wan2.1).

    ``dim`` must exceed :func:`token_input_dim`: a Wan transformer has no skip from its input to its output,
    so the flow ``v = eps - x0`` it predicts (nearly the input itself at high noise) passes through the
    ``dim``-wide residual stream next to the text and everything computed from other tokens. At ``dim`` =
    the token's 64 numbers, measured on the ci world's latents (docs/benchmarks.md "Shapes world"), a
    teacher cannot even fit the five clean clips of one prompt: trained on them alone, its samples
    moved the prompt's way 0.25 / 0.12 of the time (two prompts and seeds), where ``dim`` 128 gives 1.00 /
    1.00, and on the whole training set its high-noise loss was worse than predicting the data mean.

    Raises:
        ValueError: ``dim`` not above the token input size, or not a multiple of the head dim.
    """
    tokens = token_input_dim(patch_size)
    if dim <= tokens or dim % HEAD_DIM:
        raise ValueError(
            f"teacher dim {dim} must be a multiple of {HEAD_DIM} above the {tokens} numbers of one "
            f"latent token (16 channels x patch {patch_size}); use e.g. {max(2 * tokens, 2 * HEAD_DIM)}"
        )
    return {
        "patch_size": tuple(patch_size),
        "num_attention_heads": dim // HEAD_DIM,
        "attention_head_dim": HEAD_DIM,
        "in_channels": LATENT_CHANNELS,
        "out_channels": LATENT_CHANNELS,
        "text_dim": text_dim,
        "freq_dim": 64,
        "ffn_dim": 2 * dim,
        "num_layers": layers,
        "cross_attn_norm": True,
        "rope_max_seq_len": 64,
    }


def train_teacher(
    latents: torch.Tensor,
    text: torch.Tensor,
    negative: torch.Tensor,
    config: dict[str, object],
    steps: int,
    batch: int,
    seed: int,
    init: WanTransformer3DModel | None = None,
    lr: float = LR,
    decay: bool = True,
) -> tuple[WanTransformer3DModel, list[float]]:
    """Train the teacher (a fresh optimizer and schedule on every call).

    Args:
        latents: ``[N, F, C, H, W]`` normalised VAE latents of the training clips.
        text: ``[N, L, D]`` their prompt embeddings.
        negative: ``[1, L, D]`` the negative prompt's embedding (unconditional input).
        config: :func:`teacher_config`.
        steps, batch: Budget.
        seed: Initialisation and sampling seed.
        init: A teacher to continue training (``config`` is then ignored); ``None`` = a fresh one.
        lr: Peak learning rate.
        decay: After the warm-up (5 % of the steps), a cosine to 0 (True) or ``lr`` to the end (False).

    Returns:
        ``(teacher in eval mode, per-step losses)``.
    """
    g = torch.Generator().manual_seed(seed)
    if init is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = WanTransformer3DModel(**config)
    else:
        net = init
    net.train()
    den = BidirectionalDenoiser(net)
    # foreach=True computes single-tensor AdamW's update to the bit (max difference 0.0 over 100 steps of this
    # network, 7.0 instead of 9.3 ms); not fused=True (faster still): its rounding alone moved the ci build's
    # held-out direction from 0.75 to 0.48 (docs/benchmarks.md "Shapes world", "ci build, cheaper steps").
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.99), foreach=True)
    warm = max(1, steps // 20)

    def factor(s: int) -> float:
        tail = 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)) if decay else 1.0
        return min(1.0, (s + 1) / warm) * tail

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    losses = []
    for _ in progress(range(steps), desc="teacher (steps)", total=steps):
        idx = torch.randint(0, latents.shape[0], (batch,), generator=g)
        x0, c = latents[idx], text[idx].clone()
        drop = torch.rand(batch, generator=g) < P_UNCOND
        c[drop] = negative.to(c.dtype)
        sigma = shift_sigma(torch.rand(batch, generator=g).clamp(1e-3, 1.0), TRAIN_SHIFT)
        eps = torch.randn(x0.shape, generator=g)
        s = sigma.view(-1, 1, 1, 1, 1)
        x_t = (1 - s) * x0 + s * eps
        v = den.predict_flow(x_t, 1000.0 * sigma, c)
        loss = ((v - (eps - x0)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return net.eval(), losses


def train_world_teacher(
    latents: torch.Tensor,
    text: torch.Tensor,
    negative: torch.Tensor,
    prompts: list[str],
    config: dict[str, object],
    order_steps: int,
    steps: int,
    batch: int,
    seed: int,
) -> tuple[WanTransformer3DModel, list[float]]:
    """The world's teacher: ``order_steps`` on the clips of :data:`ORDER_DIRECTIONS`, then ``steps`` on all clips.

    Why two phases: a Wan transformer has only relative (rotary) positions, so no token knows which frame
    comes first, and the frame-dependent layout of a clip ("right": the object on the left first, on the
    right last) has to be learnt from attention's boundary effects. With the four directions balanced,
    neither that frame order nor the direction word lowers the loss alone (averaged over directions the
    layout is symmetric), and training stays on that saddle: a one-phase teacher of 500-3000 steps drew the
    prompt's direction at chance (0.08-0.25 on held-out prompts). Clips of two orthogonal directions share
    one layout, so the first phase learns the frame order without the word, and the second ties it to the
    word (docs/benchmarks.md "Shapes world", "teacher curriculum"; seed 0 of the ci world: held-out
    direction 0.75 in pixels, 0.90 in latents, after 1500 + 2500 steps).

    The first phase keeps its learning rate after the warm-up (no cosine): the frame order is learnt in a
    slow climb through the middle of the phase (samples of its training prompts moving their way 0.08 at step
    500, 0.50 at 1000, 0.62 at 1500 under a 2000-step cosine), and a decaying rate slows exactly that climb.
    Constant for 1000 steps, then 2000 on every clip, gave held-out direction 0.75 / 0.81 / 0.75 at three
    seeds, where 2000 (cosine) + 2000 gave 0.77 / 0.75 at two (docs/benchmarks.md "Shapes world", "teacher
    first phase at a constant rate").

    Args:
        latents, text, negative, config, batch, seed: As :func:`train_teacher`.
        prompts: The prompt of each training clip (``N``), for the first phase's selection.
        order_steps: Steps of the first phase (0: none).
        steps: Steps of the second phase, on every clip.

    Returns:
        ``(teacher in eval mode, per-step losses of both phases)``.

    Raises:
        ValueError: ``prompts`` does not match the clips, or the first phase has no clip.
    """
    if len(prompts) != latents.shape[0]:
        raise ValueError(f"{len(prompts)} prompts for {latents.shape[0]} training clips")
    net, first = None, []
    if order_steps:
        sel = [i for i, p in enumerate(prompts) if parse_prompt(p)[2] in ORDER_DIRECTIONS]
        if not sel:
            raise ValueError(f"no training clip moves {' or '.join(ORDER_DIRECTIONS)}: the first phase has no data")
        net, first = train_teacher(latents[sel], text[sel], negative, config, order_steps, batch, seed, decay=False)
    second_seed = seed if net is None else seed + 1
    net, rest = train_teacher(latents, text, negative, config, steps, batch, second_seed, init=net)
    return net, first + rest
