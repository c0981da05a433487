"""Why the shapes world's teacher does not draw the prompt's direction: measurements on a built world.

Run on a built world (``stream-r1 shapes build DIR --size ci``)::

    python benchmarks/shapes_teacher_probe.py --world DIR --threads 1

Prints (docs/benchmarks.md "Shapes world" records the figures):

* how much of each colour's object survives in the VAE latents (squared distance of a clean clip's latent
  from the latent of an all-black clip; a colour near 0 is invisible to the teacher);
* capacity: teachers of each width trained on the clean clips of one prompt alone, and how often their
  samples move the prompt's way (read in latent space: the centroid of each latent frame's distance from
  the black latent, so the VAE's decoder is not involved);
* the world teacher's flow loss at high noise against predicting the data mean, and how much its x0
  prediction changes when the direction word (or the colour word) of the prompt is swapped.

``--direction-subsets`` instead checks the sampler and where direction is lost::

    python benchmarks/shapes_teacher_probe.py --world DIR --direction-subsets --subset-steps 1500

* the sampler's ceiling: the world's CFG Euler sampler (``teacher_trajectory``) driven by the exact
  posterior-mean denoiser of the training latents (:class:`EmpiricalDenoiser`) instead of a network, so a
  wrong timestep, shift or CFG convention would show as a low direction accuracy here;
* teachers of the world's recipe (width, depth, steps given) trained on the clips of one direction, of
  two opposite directions, and of all four, with the direction accuracy of their samples on those
  directions' training prompts: the gap between one direction and two is what conditioning on the
  direction word costs;
* with ``--curriculum FIRST THEN``, a teacher trained FIRST steps on the clips of ``--first-directions``
  (default: "right") and then THEN steps on all clips, read in latents on training and held-out prompts
  and decoded and read by the world's detectors on the held-out prompts (``--first-directions left right
  up down`` is the same schedule without the curriculum).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import torch

from stream_r1.config.derived import checkpoint_path
from stream_r1.config.schema import RunConfig
from stream_r1.method.build import load_score_transformer, trajectory_teacher
from stream_r1.models.denoiser import BidirectionalDenoiser
from stream_r1.models.vae import WanVAE
from stream_r1.shapes.build import world_config
from stream_r1.shapes.data import render_clips, teacher_clips
from stream_r1.shapes.metrics import score_video
from stream_r1.shapes.sizes import WorldSize, stage_seed
from stream_r1.shapes.teacher import HEAD_DIM, teacher_config, token_input_dim, train_teacher
from stream_r1.shapes.world import COLORS, DIRECTIONS, make_prompt, parse_prompt, split_prompts
from stream_r1.train.build import build_text_pipeline
from stream_r1.train.ode_pairs import teacher_trajectory

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
OTHER_COLOR = {"red": "blue", "blue": "red", "green": "yellow", "yellow": "green"}


def latent_directions(z: torch.Tensor, black: torch.Tensor) -> list[str]:
    """Direction of each latent video ``[N, F, C, H, W]``: centroid of ``|z - black|^2``, last frame minus first."""
    e = ((z - black) ** 2).sum(dim=2)  # [N, F, H, W]
    h, w = e.shape[-2:]
    mass = e.sum(dim=(-2, -1)).clamp_min(1e-9)
    cx = (e.sum(-2) * (torch.arange(w) + 0.5)).sum(-1) / mass
    cy = (e.sum(-1) * (torch.arange(h) + 0.5)).sum(-1) / mass
    disp = torch.stack([cx[:, -1] - cx[:, 0], cy[:, -1] - cy[:, 0]], dim=1)
    names = list(DIRECTIONS)
    return [names[i] for i in (disp @ torch.tensor([DIRECTIONS[n] for n in names]).T).argmax(1).tolist()]


def latent_colors(z: torch.Tensor, black: torch.Tensor, prototypes: torch.Tensor) -> list[str]:
    """Colour of each latent video ``[N, F, C, H, W]``: nearest (cosine) of ``prototypes [4, C]`` (one per colour).

    A video's signature is its latent difference from the black latent, averaged over cells weighted by
    the squared difference (so the object's cells dominate) and over frames: ``[N, C]``.
    """
    d = z - black
    e = (d**2).sum(dim=2, keepdim=True)  # [N, F, 1, H, W]
    sig = (d * e).sum(dim=(1, 3, 4)) / e.sum(dim=(1, 3, 4)).clamp_min(1e-9)
    sim = torch.nn.functional.normalize(sig, dim=1) @ torch.nn.functional.normalize(prototypes, dim=1).T
    names = list(COLORS)
    return [names[i] for i in sim.argmax(1).tolist()]


def _config(dim: int, layers: int, text_dim: int) -> dict[str, object]:
    """:func:`teacher_config` at any width, including the narrow ones it refuses (that is what is compared)."""
    cfg = teacher_config(max(dim, 2 * token_input_dim()), layers, text_dim)
    return {**cfg, "num_attention_heads": dim // HEAD_DIM, "ffn_dim": 2 * dim}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", type=Path, required=True, help="a built shapes world (stream-r1 shapes build)")
    p.add_argument("--prompts", nargs="+", default=["a red circle moving right", "a red square moving left"])
    p.add_argument("--dims", nargs="+", type=int, default=[64, 128])
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--held-out-samples", type=int, default=4, help="world-teacher samples per held-out prompt")
    p.add_argument("--only-held-out", action="store_true", help="skip the capacity and sensitivity sections")
    p.add_argument("--direction-subsets", action="store_true", help="only the sampler ceiling and direction subsets")
    p.add_argument(
        "--subset-steps", type=int, default=1500, help="training steps of each direction-subset teacher (0: none)"
    )
    p.add_argument(
        "--curriculum", type=int, nargs=2, metavar=("FIRST", "THEN"), default=None,
        help="also a teacher trained FIRST steps on the clips of --first-directions, then THEN steps on all clips",
    )  # fmt: skip
    p.add_argument("--first-directions", nargs="+", default=["right"], choices=list(DIRECTIONS),
                   help="directions of the curriculum's first phase (all four: the same schedule without it)")  # fmt: skip
    a = p.parse_args(argv)
    if not (a.world / "world.json").is_file():
        print(
            f"--world {a.world} is not a built shapes world; build one with: stream-r1 shapes build DIR",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(a.threads)
    cfg = world_config(a.world)
    world = json.loads((a.world / "world.json").read_text(encoding="utf-8"))
    ws, seed = WorldSize(**world["size"]), int(world["seed"])  # the size it was built with
    with tempfile.TemporaryDirectory() as tmp:
        _probe(a, cfg, ws, seed, Path(tmp))
    return 0


def _probe(a: argparse.Namespace, cfg: RunConfig, ws: WorldSize, seed: int, tmp: Path) -> None:
    pool = teacher_clips(ws.teacher_clips, ws.degraded_fraction, stage_seed(seed, "clips"))
    vae = WanVAE.from_pretrained(checkpoint_path(cfg, "vae"))
    with torch.no_grad():
        lat = torch.cat(
            [vae.encode(render_clips(pool[i : i + 16], ws.pixel_frames, ws.pixels)) for i in range(0, len(pool), 16)]
        )
        black = vae.encode(-torch.ones(1, ws.pixel_frames, 3, ws.pixels, ws.pixels))
    cache, negative = build_text_pipeline(cfg, tmp / "text_cache", torch.device("cpu"))
    neg = negative.get()
    clean = [i for i, c in enumerate(pool) if c.mode == "clean"]
    if a.direction_subsets:
        _direction_subsets(a, vae, cfg, ws, seed, lat, cache, neg, black, pool)
        return

    print("| colour | object energy in the latents (clean training clips, mean) |")
    for col in COLORS:
        idx = [i for i in clean if parse_prompt(pool[i].prompt)[0] == col]
        print(f"| {col} | {float(((lat[idx] - black) ** 2).sum(dim=(1, 2, 3, 4)).mean()):.2f} |")

    teacher = trajectory_teacher(cfg, load_score_transformer(cfg, "teacher", dtype=torch.float32, device="cpu"))
    _held_out(a, cfg, teacher, cache, neg, lat, black, [pool[i] for i in clean], clean)
    if a.only_held_out:
        return

    print("\n| width | prompt | seed | final loss | samples moving the prompt's way |")
    for dim in a.dims:
        for k, prompt in enumerate(a.prompts):
            idx = [i for i in clean if pool[i].prompt == prompt]
            text = cache.get([prompt] * len(idx))
            net, losses = train_teacher(lat[idx], text, neg, _config(dim, ws.teacher_layers, text.shape[-1]),
                                        a.steps, ws.teacher_batch, k + 1)  # fmt: skip
            noise = torch.randn((a.samples, *lat.shape[1:]), generator=torch.Generator().manual_seed(k))
            den = BidirectionalDenoiser(net, shift=cfg.ode.sampler_sigma_shift)
            x0 = teacher_trajectory(den, noise, text[:1].expand(a.samples, -1, -1), neg, cfg.ode)[:, -1]
            ok = sum(d == parse_prompt(prompt)[2] for d in latent_directions(x0, black)) / a.samples
            print(f"| {dim} | {prompt} | {k + 1} | {sum(losses[-25:]) / 25:.3f} | {ok:.2f} |")

    z, prompts = lat[::3], [pool[i].prompt for i in range(0, len(pool), 3)]
    swapped_dir = [make_prompt(c, s, OPPOSITE[d]) for c, s, d in map(parse_prompt, prompts)]
    swapped_col = [make_prompt(OTHER_COLOR[c], s, d) for c, s, d in map(parse_prompt, prompts)]
    c_true, c_dir, c_col = cache.get(prompts), cache.get(swapped_dir), cache.get(swapped_col)
    mean = lat.mean(dim=0, keepdim=True)
    g = torch.Generator().manual_seed(0)
    print(
        "\n| sigma | teacher flow loss | data-mean predictor | x0 MSE: prompt | direction reversed | colour swapped |"
    )
    with torch.no_grad():
        for s in (0.5, 0.8, 0.9, 0.97):
            eps = torch.randn(z.shape, generator=g)
            x_t = (1 - s) * z + s * eps
            t = torch.full((len(z),), 1000.0 * s)

            def x0(c: torch.Tensor, x_t: torch.Tensor = x_t, t: torch.Tensor = t, s: float = s) -> torch.Tensor:
                return x_t - s * teacher.predict_flow(x_t, t, c)

            loss = float(((teacher.predict_flow(x_t, t, c_true) - (eps - z)) ** 2).mean())
            base = float((((x_t - mean) / s - (eps - z)) ** 2).mean())
            m = [float(((x0(c) - z) ** 2).mean()) for c in (c_true, c_dir, c_col)]
            print(f"| {s} | {loss:.3f} | {base:.3f} | {m[0]:.4f} | {m[1]:.4f} | {m[2]:.4f} |")


def _held_out(
    a: argparse.Namespace,
    cfg: RunConfig,
    teacher: BidirectionalDenoiser,
    cache: object,
    neg: torch.Tensor,
    lat: torch.Tensor,
    black: torch.Tensor,
    clean_clips: list,
    clean: list[int],
) -> None:
    """The world teacher's CFG samples of every held-out prompt, read in latent space (no VAE decoder).

    The readers are first checked on the clean training latents themselves (their accuracy there is the
    ceiling of what they can report for the teacher).
    """
    protos = []
    for col in COLORS:
        idx = [i for i, c in zip(clean, clean_clips, strict=True) if parse_prompt(c.prompt)[0] == col]
        d = lat[idx] - black
        e = (d**2).sum(dim=2, keepdim=True)
        protos.append(((d * e).sum(dim=(1, 3, 4)) / e.sum(dim=(1, 3, 4)).clamp_min(1e-9)).mean(0))
    prototypes = torch.stack(protos)
    z = lat[clean]
    truth = [parse_prompt(c.prompt) for c in clean_clips]
    col_ok = sum(c == t[0] for c, t in zip(latent_colors(z, black, prototypes), truth, strict=True)) / len(truth)
    dir_ok = sum(d == t[2] for d, t in zip(latent_directions(z, black), truth, strict=True)) / len(truth)
    _, held = split_prompts()
    prompts = [p for p in held for _ in range(a.held_out_samples)]
    noise = torch.randn((len(prompts), *lat.shape[1:]), generator=torch.Generator().manual_seed(1234))
    with torch.no_grad():
        x0 = torch.cat([
            teacher_trajectory(teacher, noise[i : i + 16], cache.get(prompts[i : i + 16]), neg, cfg.ode)[:, -1]
            for i in range(0, len(prompts), 16)
        ])  # fmt: skip
    truth = [parse_prompt(p) for p in prompts]
    t_col = sum(c == t[0] for c, t in zip(latent_colors(x0, black, prototypes), truth, strict=True)) / len(truth)
    t_dir = sum(d == t[2] for d, t in zip(latent_directions(x0, black), truth, strict=True)) / len(truth)
    print("| latent-space reader | colour | direction | videos |")
    print("|---|---|---|---|")
    print(f"| clean training latents (reader ceiling) | {col_ok:.2f} | {dir_ok:.2f} | {len(clean)} |")
    print(f"| world teacher, held-out prompts | {t_col:.2f} | {t_dir:.2f} | {len(prompts)} |")


class EmpiricalDenoiser:
    """Exact posterior-mean denoiser of a finite set of latents, in the sampler's ``predict_flow`` interface.

    For a prompt embedding seen in ``text``, ``x0`` is the posterior mean over that prompt's latents under
    ``x_t = (1 - sigma) x0 + sigma eps`` (``sigma = t / 1000``, the teacher's training convention); any other
    embedding (the negative prompt) gets the posterior over all latents. Driving the world's sampler with
    it reproduces training clips, so its samples score what a perfectly fitted teacher would.
    """

    def __init__(self, latents: torch.Tensor, text: torch.Tensor) -> None:
        self.latents, self.text = latents, text

    def predict_flow(self, x_t: torch.Tensor, t: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """``v = (x_t - E[x0 | x_t, prompt]) / sigma`` for ``x_t [B, F, C, H, W]`` at ``t [B]``."""
        out = []
        for b in range(x_t.shape[0]):
            s = max(float(t[b]) / 1000.0, 1e-4)
            same = (self.text == text_emb[b].to(self.text.dtype)).flatten(1).all(dim=1)
            bank = self.latents[same] if bool(same.any()) else self.latents
            d2 = ((x_t[b : b + 1].float() - (1 - s) * bank) ** 2).flatten(1).sum(dim=1)
            w = torch.softmax(-d2 / (2 * s * s), dim=0)
            out.append((x_t[b].float() - (w.view(-1, 1, 1, 1, 1) * bank).sum(dim=0)) / s)
        return torch.stack(out).to(x_t.dtype)


def _samples(
    den: object,
    cfg: RunConfig,
    cache: object,
    neg: torch.Tensor,
    prompts: list[str],
    shape: tuple[int, ...],
    guidance: float,
) -> torch.Tensor:
    """CFG samples ``[N, F, C, H, W]`` of ``prompts`` (noise seed 1234) with the world's sampler."""
    ode = dataclasses.replace(cfg.ode, guidance_scale=guidance)
    noise = torch.randn((len(prompts), *shape), generator=torch.Generator().manual_seed(1234))
    with torch.no_grad():
        return torch.cat([
            teacher_trajectory(den, noise[i : i + 16], cache.get(prompts[i : i + 16]), neg, ode)[:, -1]  # type: ignore[arg-type, attr-defined]
            for i in range(0, len(prompts), 16)
        ])  # fmt: skip


def _sample_directions(
    den: object,
    cfg: RunConfig,
    cache: object,
    neg: torch.Tensor,
    prompts: list[str],
    black: torch.Tensor,
    shape: tuple[int, ...],
    guidance: float,
) -> float:
    """Fraction of CFG samples whose latent centroid moves the prompt's way."""
    x0 = _samples(den, cfg, cache, neg, prompts, shape, guidance)
    hits = [d == parse_prompt(p)[2] for d, p in zip(latent_directions(x0, black), prompts, strict=True)]
    return sum(hits) / len(prompts)


def _direction_subsets(
    a: argparse.Namespace,
    vae: WanVAE,
    cfg: RunConfig,
    ws: WorldSize,
    seed: int,
    lat: torch.Tensor,
    cache: object,
    neg: torch.Tensor,
    black: torch.Tensor,
    pool: list,
) -> None:
    """The sampler's ceiling, then world-recipe teachers trained on clips of 1, 2 and 4 directions."""
    train, _ = split_prompts()
    prompts = [p for p in train[::3] for _ in range(a.held_out_samples)]
    text = cache.get([c.prompt for c in pool])  # type: ignore[attr-defined]
    exact = EmpiricalDenoiser(lat, text)
    print(
        "| denoiser | training clips | steps | final loss | direction, CFG 1 | direction, CFG "
        f"{cfg.ode.guidance_scale:g} | prompts x samples |"
    )
    print("|---|---|---|---|---|---|---|")
    ceiling = _sample_directions(exact, cfg, cache, neg, prompts, black, tuple(lat.shape[1:]), 1.0)
    print(f"| exact posterior mean (sampler ceiling) | all {len(pool)} | - | - | {ceiling:.2f} | - | {len(prompts)} |")
    for dirs in (("right",), ("left", "right"), tuple(DIRECTIONS)) if a.subset_steps else ():
        idx = [i for i, c in enumerate(pool) if parse_prompt(c.prompt)[2] in dirs]
        net, losses = train_teacher(
            lat[idx], text[idx], neg, teacher_config(ws.teacher_dim, ws.teacher_layers, int(text.shape[-1])),
            a.subset_steps, ws.teacher_batch, stage_seed(seed, "teacher"),
        )  # fmt: skip
        den = BidirectionalDenoiser(net, shift=cfg.ode.sampler_sigma_shift)
        sub = [p for p in train if parse_prompt(p)[2] in dirs]
        sub = [p for p in sub[:: max(1, len(sub) // 12)] for _ in range(a.held_out_samples)]
        acc = [_sample_directions(den, cfg, cache, neg, sub, black, tuple(lat.shape[1:]), g)
               for g in (1.0, cfg.ode.guidance_scale)]  # fmt: skip
        print(
            f"| world recipe (dim {ws.teacher_dim}, {ws.teacher_layers} layers) | {len(idx)} ({', '.join(dirs)}) "
            f"| {a.subset_steps} | {sum(losses[-20:]) / len(losses[-20:]):.3f} | {acc[0]:.2f} | {acc[1]:.2f} | {len(sub)} |"
        )
    if a.curriculum:
        # A teacher that first learns which frame comes first (one direction), then to tie it to the word.
        first, then = a.curriculum
        tcfg = teacher_config(ws.teacher_dim, ws.teacher_layers, int(text.shape[-1]))
        sel = [i for i, c in enumerate(pool) if parse_prompt(c.prompt)[2] in a.first_directions]
        net, _ = train_teacher(lat[sel], text[sel], neg, tcfg, first, ws.teacher_batch, stage_seed(seed, "teacher"))
        net, losses = train_teacher(lat, text, neg, tcfg, then, ws.teacher_batch, stage_seed(seed, "teacher") + 1, net)
        den = BidirectionalDenoiser(net, shift=cfg.ode.sampler_sigma_shift)
        _, held = split_prompts()
        for name, ps in (("training", prompts), ("held-out", [p for p in held for _ in range(a.held_out_samples)])):
            acc = [_sample_directions(den, cfg, cache, neg, ps, black, tuple(lat.shape[1:]), g)
                   for g in (1.0, cfg.ode.guidance_scale)]  # fmt: skip
            print(
                f"| {first} steps on {'/'.join(a.first_directions)}, then {then} on all ({name} prompts) | {len(pool)} "
                f"| {first + then} | {sum(losses[-20:]) / len(losses[-20:]):.3f} | {acc[0]:.2f} | {acc[1]:.2f} | {len(ps)} |"
            )
        print("\n| that teacher, held-out prompts, decoded | CFG | colour (pixels) | direction (pixels) | videos |")
        print("|---|---|---|---|---|")
        ps = [p for p in held for _ in range(a.held_out_samples)]
        for g in (1.0, cfg.ode.guidance_scale):
            x0 = _samples(den, cfg, cache, neg, ps, tuple(lat.shape[1:]), g)
            with torch.no_grad():
                rows = [score_video(f, p) for f, p in zip(vae.decode(x0), ps, strict=True)]
            col, dirn = (sum(r[k] for r in rows) / len(rows) for k in ("color", "direction"))
            print(f"| world detectors | {g:g} | {col:.2f} | {dirn:.2f} | {len(ps)} |")


if __name__ == "__main__":
    raise SystemExit(main())
