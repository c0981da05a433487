"""``stream-r1 shapes build DIR``: every model of the shapes world, trained here, in the real formats.

Layout (the tiny_cpu layout, docs/design.md "Tiny checkpoints", so ``checkpoints.root=DIR`` works
with every loader)::

    DIR/text_encoder/ tokenizer/   tiny umT5 (random: the teacher learns from its embeddings) + world vocabulary
    DIR/vae/                       AutoencoderKLWan trained on world clips
    DIR/teacher/  DIR/base/        bidirectional WanTransformer3DModel (flow matching, CFG); base = the same
                                   weights (student architecture and critic initialisation, as in Self-Forcing)
    DIR/ode_init.pt                student regressed on the teacher's ODE pairs (stream-r1 ode-pairs/ode-init code)
    DIR/VideoReward/               Qwen2-VL VideoReward, official layout, trained on GT labels
    DIR/metrics.json               measured quality of each model
    DIR/world.json                 size, seed, build key and the config overrides this size needs
    DIR/MANIFEST.json              sha256 of every file

The build key hashes the size, the seed and the source of the world and its trainers; a directory
whose key and MANIFEST verify is left as it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from stream_r1.config import load_config
from stream_r1.config.schema import RunConfig
from stream_r1.models.loading import export_diffusers
from stream_r1.models.tiny import build_tiny_text_encoder, build_tiny_tokenizer
from stream_r1.models.vae import WanVAE
from stream_r1.reward.preprocess import PreprocessOptions
from stream_r1.shapes.data import held_out_clips, render_clips, teacher_clips
from stream_r1.shapes.reward import WORLD_WORDS, reward_quality, train_videoreward
from stream_r1.shapes.sampling import sample_student, sample_teacher, score_videos
from stream_r1.shapes.sizes import WorldSize, get_size, stage_seed
from stream_r1.shapes.teacher import teacher_config, train_world_teacher
from stream_r1.shapes.vae import reconstruction_psnr, roundtrip_scores, train_vae
from stream_r1.shapes.world import split_prompts
from stream_r1.train.build import build_text_pipeline
from stream_r1.train.ode_entry import run_ode_init, run_ode_pairs
from stream_r1.utils.background import BackgroundCall
from stream_r1.utils.io import atomic_write_json, sha256_file
from stream_r1.utils.logging import get_logger

log = get_logger(__name__)

PRESET = "shapes_cpu"
MANIFEST = "MANIFEST.json"
WORLD_FILE = "world.json"
METRICS_FILE = "metrics.json"
PARTS = ("text_encoder", "tokenizer", "vae", "teacher", "base", "ode_init.pt", "VideoReward")
VAE_CLIP_FRAMES = 9
REWARD_HELD_OUT = 96
"""Held-out videos of the recorded VideoReward rank correlations (a 96-video Spearman moves by about +-0.1)."""


def size_overrides(ws: WorldSize, root: str | Path) -> list[str]:
    """``--set`` overrides that point the ``shapes_cpu`` preset at a world of size ``ws`` in ``root``."""
    f, s = ws.latent_frames, ws.latent_side
    return [
        f"checkpoints.root={root}",
        f"rollout.num_frames={f}",
        f"eval.num_frames={f}",
        f"rollout.latent_height={s}",
        f"rollout.latent_width={s}",
    ]


def world_config(root: str | Path, extra: list[str] | None = None) -> RunConfig:
    """The ``shapes_cpu`` config for the world built in ``root`` (its size read from ``world.json``)."""
    info = json.loads((Path(root) / WORLD_FILE).read_text(encoding="utf-8"))
    return load_config(PRESET, [*info["overrides"], *(extra or [])])


def build_key(ws: WorldSize, seed: int) -> str:
    """sha256 over the size, the seed, the preset and the source of the world package."""
    h = hashlib.sha256(json.dumps({"size": ws.to_dict(), "seed": seed}, sort_keys=True).encode())
    here = Path(__file__).parent
    for f in sorted(here.glob("*.py")):
        h.update(f.name.encode() + f.read_bytes())
    preset = here.parent / "config" / "presets" / f"{PRESET}.yaml"
    h.update(preset.read_bytes())
    return h.hexdigest()


def _manifest_files(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST and not p.relative_to(root).as_posix().startswith(".")
    }


def is_built(root: str | Path, ws: WorldSize, seed: int) -> bool:
    """True when ``root`` holds a verified build with this size, seed and code."""
    root = Path(root)
    try:
        world = json.loads((root / WORLD_FILE).read_text(encoding="utf-8"))
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    if world.get("key") != build_key(ws, seed):
        return False
    files = manifest.get("files", {})
    return all((root / rel).is_file() and sha256_file(root / rel) == sha for rel, sha in files.items()) and all(
        any(f == p or f.startswith(p + "/") for f in files) for p in PARTS
    )


def _write_prompts(path: Path, prompts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(p + "\n" for p in prompts), encoding="utf-8")
    return path


def videoreward_stage(root: Path, ws: WorldSize, seed: int) -> dict[str, object]:
    """Train the world's VideoReward into ``root/VideoReward`` and measure it; needs only ``root/world.json``.

    Runs on one torch thread wherever it runs (in this process or the build's second one), so both give
    the same weights: thread counts change the order of float sums. It leaves the caller's global RNG as it
    was, so the later stages draw the same numbers whether it ran here or in the second process.

    Returns:
        ``{"videoreward": rank correlations, "seconds": stage time}``.
    """
    t0 = time.perf_counter()
    with _torch_threads(1), torch.random.fork_rng(devices=[]):
        opts = PreprocessOptions.from_config(world_config(root).reward)
        train_videoreward(
            root / "VideoReward",
            ws.reward_steps,
            ws.reward_rubric_steps,
            ws.pixel_frames,
            ws.pixels,
            opts,
            stage_seed(seed, "reward"),
        )
        quality = reward_quality(root / "VideoReward", REWARD_HELD_OUT, ws.pixel_frames, ws.pixels, opts)
    return {"videoreward": quality, "seconds": time.perf_counter() - t0}


def _usable_cpus() -> int:
    affinity = getattr(os, "sched_getaffinity", None)  # Linux only
    return len(affinity(0)) if affinity else os.cpu_count() or 1


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside the block, the caller's count restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _start_videoreward(root: Path, ws: WorldSize, seed: int, parallel: bool | None) -> BackgroundCall | None:
    """Start :func:`videoreward_stage` in a second process (None: it runs later, in this process)."""
    if parallel is None:
        parallel = _usable_cpus() >= 2
    if not parallel:
        return None
    log.info("training the VideoReward in a second process while the VAE and the teacher train")
    # Its progress bars would interleave with the main stages' bars.
    return BackgroundCall(videoreward_stage, root, ws, seed, env={"STREAM_R1_PROGRESS": "0"})


def build_world(
    root: str | Path, size: str = "default", *, seed: int = 0, force: bool = False, parallel: bool | None = None
) -> Path:
    """Build (or verify) the shapes world's checkpoint set in ``root``; returns ``root``.

    ``parallel``: train the VideoReward in a second process while the VAE and the teacher train (it needs
    none of them); None = when this process may use at least two CPUs. Either way the result is the same.
    The main stages run on one torch thread fewer than the usable CPUs (at least one), whatever the caller set.

    Raises:
        ValueError: Unknown size.
    """
    ws = get_size(size)
    root = Path(root)
    if not force and is_built(root, ws, seed):
        log.info("shapes world in %s is up to date (size %s)", root, ws.name)
        return root
    for part in (*PARTS, MANIFEST, WORLD_FILE, METRICS_FILE, ".work"):
        p = root / part
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    work = root / ".work"
    work.mkdir(parents=True)
    timings: dict[str, float] = {}
    metrics: dict[str, object] = {}
    overrides = size_overrides(ws, root)
    # world.json first (without the key): the config of every later stage is read from it.
    atomic_write_json(root / WORLD_FILE, {"size": ws.to_dict(), "seed": seed, "overrides": overrides})
    cfg = world_config(root)
    torch.manual_seed(stage_seed(seed, "global"))

    wall = time.perf_counter()
    pending = _start_videoreward(root, ws, seed, parallel)
    # The main stages leave one CPU to the VideoReward's thread, whether or not it runs beside them: with all
    # CPUs here too, the threads outnumber the cores and the ci build took 297 s instead of 168 s on 2 cores (VAE
    # 268 vs 82 s); and one count either way keeps a parallel and a sequential build equal.
    # However the stages end, the second process ends with them (it must not go on writing into root).
    with _torch_threads(max(1, _usable_cpus() - 1)), pending if pending is not None else contextlib.nullcontext():
        t0 = time.perf_counter()
        tokenizer = build_tiny_tokenizer((*WORLD_WORDS, ",", "."))
        tokenizer.save_pretrained(str(root / "tokenizer"))
        build_tiny_text_encoder(stage_seed(seed, "umt5"), len(tokenizer)).save_pretrained(str(root / "text_encoder"))
        timings["text_encoder"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        pool = teacher_clips(ws.teacher_clips, ws.degraded_fraction, stage_seed(seed, "clips"))
        vae_model = train_vae(
            lambda s: [pool[(s * ws.vae_batch + i) % len(pool)] for i in range(ws.vae_batch)],
            ws.vae_steps, ws.vae_batch, VAE_CLIP_FRAMES, ws.pixels, stage_seed(seed, "vae"),
            image_steps=ws.vae_image_steps, image_batch=8, crop=ws.pixels,
        )  # fmt: skip
        vae_model.save_pretrained(str(root / "vae"), safe_serialization=True)
        vae = WanVAE.from_pretrained(root / "vae")
        held = render_clips(held_out_clips(2), ws.pixel_frames, ws.pixels)
        metrics["vae"] = reconstruction_psnr(vae, held)
        metrics["vae_roundtrip"] = roundtrip_scores(vae, ws.pixel_frames, ws.pixels)
        timings["vae"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        with torch.no_grad():
            latents = torch.cat(
                [vae.encode(render_clips(pool[i : i + 16], ws.pixel_frames, ws.pixels)) for i in range(0, len(pool), 16)]
            )
        cache, negative = build_text_pipeline(cfg, work / "text_cache", torch.device("cpu"))
        text = cache.get([c.prompt for c in pool])
        tcfg = teacher_config(ws.teacher_dim, ws.teacher_layers, int(text.shape[-1]))
        teacher, losses = train_world_teacher(
            latents, text, negative.get(), [c.prompt for c in pool], tcfg, ws.teacher_order_steps, ws.teacher_steps,
            ws.teacher_batch, stage_seed(seed, "teacher"),
        )  # fmt: skip
        export_diffusers(teacher, root / "teacher")
        export_diffusers(teacher, root / "base")
        k = max(1, min(20, len(losses) // 4))
        metrics["teacher_train_loss"] = {"first": sum(losses[:k]) / k, "last": sum(losses[-k:]) / k}
        timings["teacher"] = time.perf_counter() - t0

        reward = pending.result() if pending is not None else videoreward_stage(root, ws, seed)
        metrics["videoreward"], timings["videoreward"] = reward["videoreward"], reward["seconds"]

        t0 = time.perf_counter()
        train_prompts, held_prompts = split_prompts()
        ode_cfg = world_config(root, [f"ode.num_steps={ws.ode_steps}", f"train.seed={stage_seed(seed, 'ode') % 2**31}"])
        prompts_file = _write_prompts(work / "ode_prompts.txt", train_prompts * ws.ode_repeats)
        run_ode_pairs(ode_cfg, work / "ode_pairs", str(prompts_file), teacher="teacher")
        run_ode_init(ode_cfg, work / "ode_pairs", work / "ode_init")
        shutil.copyfile(work / "ode_init" / "ode_init.pt", root / "ode_init.pt")
        timings["ode_init"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        eval_prompts = [p for p in held_prompts for _ in range(ws.eval_seeds)]
        metrics["teacher_held_out"] = score_videos(sample_teacher(cfg, eval_prompts, 0, work / "text_cache"))
        metrics["ode_init_held_out"] = score_videos(sample_student(cfg, None, eval_prompts, 0, work / "text_cache"))
        timings["evaluation"] = time.perf_counter() - t0

    metrics["seconds"] = timings
    atomic_write_json(root / METRICS_FILE, metrics)
    atomic_write_json(
        root / WORLD_FILE, {"size": ws.to_dict(), "seed": seed, "overrides": overrides, "key": build_key(ws, seed)}
    )
    shutil.rmtree(work)
    atomic_write_json(
        root / MANIFEST, {"size": ws.name, "seed": seed, "parts": list(PARTS), "files": _manifest_files(root)}
    )
    log.info("shapes world (%s) built in %s in %.0f s", ws.name, root, time.perf_counter() - wall)
    return root
