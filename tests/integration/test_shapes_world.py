"""The ``ci`` shapes world: built by the project's code, loadable by every loader, and it has learned.

One session-scoped build (tests/conftest.py) serves every test (docs/benchmarks.md "Shapes world": 190-300 s on 2 cores at load 3-5,
mostly the VAE). The learning checks are ones untrained weights cannot pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stream_r1.config.derived import checkpoint_path
from stream_r1.models.loading import inspect_generator_checkpoint, load_student, load_wan_transformer
from stream_r1.models.vae import WanVAE
from stream_r1.reward.model import VideoRewardModel
from stream_r1.shapes.build import MANIFEST, METRICS_FILE, PARTS, build_world, is_built, world_config
from stream_r1.shapes.sampling import sample_student, score_videos
from stream_r1.shapes.sizes import get_size
from stream_r1.shapes.world import split_prompts
from stream_r1.train.entry import run_training

# The build is about 3 minutes of CPU; on a loaded 2-core machine its wall time passed the suite's
# 600 s default once, so this module gets twice that.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def world(shapes_world_ci: Path) -> Path:
    return shapes_world_ci  # tests/conftest.py: one build per session, shared with the run-local test


def test_build_is_complete_cached_and_in_the_real_formats(world: Path) -> None:
    manifest = json.loads((world / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["parts"] == list(PARTS)
    assert is_built(world, get_size("ci"), 0) and not is_built(world, get_size("ci"), 1)
    stamp = (world / MANIFEST).stat().st_mtime_ns
    build_world(world, "ci", seed=0)  # verified: nothing is rebuilt
    assert (world / MANIFEST).stat().st_mtime_ns == stamp
    cfg = world_config(world)
    assert load_wan_transformer(checkpoint_path(cfg, "teacher"), causal=False).config.num_layers == 2
    assert inspect_generator_checkpoint(checkpoint_path(cfg, "student_init")) is not None
    load_student(checkpoint_path(cfg, "base"), checkpoint_path(cfg, "student_init"), use_ema=False)
    assert WanVAE.from_pretrained(checkpoint_path(cfg, "vae")).z_dim == 16
    reward = VideoRewardModel.from_checkpoint(checkpoint_path(cfg, "reward"))
    assert set(reward.reward_token_ids) == {"VQ", "MQ", "TA"}
    metrics = json.loads((world / METRICS_FILE).read_text(encoding="utf-8"))
    assert {"vae", "videoreward", "teacher_held_out", "ode_init_held_out"} <= set(metrics)


def test_the_teacher_has_learnt_its_training_set(world: Path) -> None:
    loss = json.loads((world / METRICS_FILE).read_text(encoding="utf-8"))["teacher_train_loss"]
    # Flow-matching loss, last over first logged value: 0.23 and 0.32 at seeds 0 and 1 with the dim-128 teacher
    # (0.35-0.44 in three builds at dim 64); a teacher that learns nothing stays near 1.
    assert loss["last"] <= 0.6 * loss["first"], loss


def test_the_teacher_draws_the_held_out_prompts_colour_and_direction(world: Path) -> None:
    held = json.loads((world / METRICS_FILE).read_text(encoding="utf-8"))["teacher_held_out"]
    # 48 CFG samples of the 12 held-out compositions, read by the world's pixel detectors after the VAE decode;
    # chance is 0.25 for both (a random teacher's 48 samples pass 0.5 with probability below 1e-4, binomial).
    # Measured in the builds of seeds 0 / 1 (two-phase teacher, shapes.teacher.train_world_teacher, and the VAE's
    # red-minus-green term): colour 0.85 / 0.94, direction 0.75 / 0.73 (docs/benchmarks.md "Shapes world",
    # "teacher curriculum", "VAE colour"); with the first phase at a constant rate (1000 + 1500 steps), direction
    # 0.75 / 0.85 / 0.71 at three teacher seeds on another CPU's seed-0 VAE, colour 1.00 ("teacher first phase at a
    # constant rate"); the one-phase teacher before drew the direction at 0.08-0.25.
    assert held["color"] >= 0.5, held
    assert held["direction"] >= 0.5, held


def test_a_short_distillation_moves_the_students_gt_total_toward_the_teachers(world: Path, tmp_path: Path) -> None:
    metrics = json.loads((world / METRICS_FILE).read_text(encoding="utf-8"))
    teacher, start = metrics["teacher_held_out"]["total"], metrics["ode_init_held_out"]["total"]
    # 30 optimizer steps of plain DMD (6 generator updates) from the build's ODE-init student, the same
    # held-out prompts and noise (seed 0) as the build's own ODE-init score. Measured: GT Total 0.352 -> 0.420
    # against the teacher's 0.427 (world seed 0), 0.305 -> 0.393 against 0.426 (world seed 1); before the VAE's
    # colour term, 0.405 -> 0.421-0.454 against 0.463 at training seeds 0-2, Reward Forcing and Stream-R1
    # likewise (docs/benchmarks.md "Shapes world", ablation). With the 1000 + 1500-step teacher, on another CPU:
    # 0.447 -> 0.468 against 0.497. A student that learnt nothing stays where it began.
    assert teacher > start, metrics  # the teacher is the better model, so there is something to move toward
    cfg = world_config(world, ["reward.mode=none", "reward.intra=false", "reward.temporal=false",
                               "train.num_optimizer_steps=30", "train.seed=0"])  # fmt: skip
    run_training(cfg, tmp_path / "run")
    _, held = split_prompts()
    prompts = [p for p in held for _ in range(get_size("ci").eval_seeds)]
    student = score_videos(sample_student(cfg, tmp_path / "run" / "final" / "model.pt", prompts, 0, tmp_path / "t"))
    assert abs(teacher - student["total"]) < abs(teacher - start), (student, teacher, start)
    assert student["semantic"] > metrics["ode_init_held_out"]["semantic"], (student, metrics["ode_init_held_out"])


def test_the_vae_keeps_the_motion_and_beats_the_black_frame(world: Path) -> None:
    metrics = json.loads((world / METRICS_FILE).read_text(encoding="utf-8"))
    # Held-out PSNR 20.5 / 19.9 dB at seeds 0 and 1 (main's earlier recipe: 17.0-18.7); predicting the black
    # background everywhere scores 15.9 dB and the mean frame 16.4 dB, an untrained VAE far less.
    assert metrics["vae"]["psnr"] >= 18.0, metrics["vae"]
    # Clean held-out round trips move the prompt's way: 1.00 at seeds 0 and 1 at 32 px and in all four 64 px
    # builds measured (12 clips; chance 0.25, and a decode that does not move scores 0).
    assert metrics["vae_roundtrip"]["clean"]["direction"] >= 0.75, metrics["vae_roundtrip"]["clean"]
    # ... and keep the four colours: 1.00 at seeds 0-3 with the red-minus-green term (without it red and green
    # decoded as yellow at seeds 2 and 3: 0.50; shapes.vae.CHROMA_WEIGHT).
    assert metrics["vae_roundtrip"]["clean"]["color"] >= 0.75, metrics["vae_roundtrip"]["clean"]


def test_the_videoreward_is_the_trained_one_and_ranks_held_out_videos(world: Path) -> None:
    from stream_r1.reward.preprocess import PreprocessOptions
    from stream_r1.shapes.reward import held_out_examples

    cfg = world_config(world)
    ws = get_size("ci")
    reward = VideoRewardModel.from_checkpoint(checkpoint_path(cfg, "reward"))
    opts = PreprocessOptions.from_config(cfg.reward)
    # The build standardises the logits with their mean and std on these 48 held-out videos, computed from the model
    # in memory; loaded from the written layout (trained LLM as the base, zero adapter, tuned ViT / embeddings /
    # rm_head), the same function gives z-scores of mean 0 and std 1 on them up to float32 rounding.
    z = torch.tensor(
        [
            list(reward.score(ex.frames, ex.prompt, opts).z.values())
            for ex in held_out_examples(48, ws.pixel_frames, ws.pixels)
        ]
    )
    assert z.mean(dim=0).abs().max() < 1e-3 and (z.std(dim=0) - 1).abs().max() < 1e-3, z
    rho = json.loads((world / METRICS_FILE).read_text(encoding="utf-8"))["videoreward"]
    # Held-out Spearman on 96 videos (a single estimate moves by about +-0.1). The ci recipe (2000 steps, the last 100
    # on the rubric) measured TA 0.41 at this build's reward seed (benchmarks/shapes_reward_batched.py --build
    # --steps 2000 --rubric-steps 100 --seed 5916013696152893582; 0.39 in the build itself), 0.46 / 0.52 at two other
    # seeds (8822408992237997611: build seed 1, and 0); the same initialisation untrained (--steps 0) gives
    # TA -0.19 to 0.00 at six seeds, main's former 200-video LoRA recipe 0.08 / -0.07. At 1000-1500 steps this seed
    # was still on the loss plateau (TA -0.10 / -0.22), so the margin below 0.41 is kept wide. VQ and MQ are not above
    # what untrained weights give (-0.17 to 0.19) at this budget and are not asserted (docs/benchmarks.md
    # "Shapes world", fifth pass).
    assert rho["spearman_TA"] >= 0.25, rho


def test_the_saliency_probe_reads_the_worlds_reward_on_renders(world: Path, tmp_path: Path) -> None:
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "shapes_saliency_probe.py"
    spec = importlib.util.spec_from_file_location("shapes_saliency_probe", script)
    assert spec is not None and spec.loader is not None
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    out = tmp_path / "probe.json"
    assert probe.main(["--world", str(world), "--per-prompt", "1", "--modes", "clean", "--json", str(out)]) == 0
    res = json.loads(out.read_text(encoding="utf-8"))
    side = get_size("ci").latent_side
    assert res["videos"] == len(split_prompts()[1])
    # Shares of a mean-1 weight over equal rows / columns average to 1 whatever the reward does.
    for share in (res["w_intra_row_share"], res["w_intra_col_share"]):
        assert len(share) == side and abs(sum(share) / side - 1) < 1e-4, share
    figures = [res["w_intra_vs_mask"], res["w_intra_pairwise"], res["w_intra_vs_black"]]
    figures += [v for axis in res["pixel_saliency"].values() for v in axis.values()]
    assert set(res["pixel_saliency"]) == {"VQ", "MQ", "TA"} and all(-1 <= v <= 1 for v in figures), res
    tokens = res["embeds_token_share"]
    assert sum(tokens["renders_argmax_counts"]) == res["videos"]
    assert len(tokens["black"]) == len(tokens["renders_median"]) == len(tokens["renders_argmax_counts"])
    assert abs(sum(tokens["black"]) / len(tokens["black"]) - 1) < 1e-4  # shares of the mean average to 1
