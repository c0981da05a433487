"""The paper's VBench table in miniature: plain DMD vs Reward Forcing vs Stream-R1 in the shapes world.

Every student starts from the same ODE-initialised checkpoint of the world (``stream-r1 shapes build``)
and trains the same number of steps with ``stream-r1 train``'s code (:func:`run_training`) under the
``shapes_cpu`` preset plus each method's overrides; the method presets (``plain_dmd``,
``reward_forcing``) are read from ``stream_r1/config/presets`` so the table tests those exact files.
Each trained student then streams videos of the 12 held-out prompts, scored by the ground-truth
detectors (Quality / Semantic / Total, degraded fraction) and by the world's VideoReward (z per axis),
with FPS from the same loop. The multi-step teacher and the ODE-init student are evaluated alike.
Stream-R1 rows also record W_intra against the object's mask on a few rollouts::

    .venv/bin/python benchmarks/shapes_ablation.py --world .cache/shapes-world --size default \\
        --steps 60 --seeds 0 1 2 --methods plain_dmd reward_forcing stream_r1 --out /tmp/shapes_ablation.json

``--methods`` also takes the ablations ``inter_only``, ``intra_only``, ``no_balancing``, ``beta_1``,
``beta_4``. The JSON holds every per-seed number; ``--markdown A.json [B.json ...]`` prints the table
(mean ± std) of one or several result files (e.g. methods run in parallel processes with
``--no-references`` on all but one).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stream_r1.config.schema import RunConfig  # noqa: E402

PRESETS = REPO / "stream_r1" / "config" / "presets"
METHODS: dict[str, tuple[str | None, list[str]]] = {
    "plain_dmd": ("plain_dmd", []),
    "reward_forcing": ("reward_forcing", []),
    "stream_r1": (None, []),
    "inter_only": (None, ["reward.intra=false", "reward.temporal=false"]),
    "intra_only": (None, ["reward.beta=0"]),
    "no_balancing": (None, ["reward.mode=Overall"]),
    "beta_1": (None, ["reward.beta=1"]),
    "beta_4": (None, ["reward.beta=4"]),
}
"""Method -> (preset whose settings are layered on shapes_cpu, extra overrides). Stream-R1 is the
shapes_cpu default: BalancedOverall with intra (pixel saliency) and temporal weighting, beta 2."""
LABELS = {
    "teacher": "Teacher (multi-step, CFG)",
    "ode_init": "ODE-init student",
    "plain_dmd": "Plain DMD (Self Forcing)",
    "reward_forcing": "Reward Forcing (exp(β·MQ))",
    "stream_r1": "**Stream-R1**",
    "inter_only": "Stream-R1: inter only",
    "intra_only": "Stream-R1: intra only (β=0)",
    "no_balancing": "Stream-R1: no balancing (Overall)",
    "beta_1": "Stream-R1: β=1",
    "beta_4": "Stream-R1: β=4",
}
COLUMNS = ("fps", "total", "quality", "semantic", "degraded", "reward_VQ", "reward_MQ", "reward_TA")


def preset_overrides(name: str) -> list[str]:
    """A preset file's settings (except its name) as ``--set`` overrides."""
    data = yaml.safe_load((PRESETS / f"{name}.yaml").read_text(encoding="utf-8"))

    def flat(prefix: str, d: dict) -> list[str]:
        out = []
        for k, v in d.items():
            key = f"{prefix}{k}"
            out += flat(key + ".", v) if isinstance(v, dict) else [f"{key}={json.dumps(v)}"]
        return out

    return flat("", {k: v for k, v in data.items() if k != "name"})


def method_config(world: Path, method: str, seed: int, steps: int) -> RunConfig:
    """shapes_cpu for ``world`` + the method's preset and overrides + seed and steps."""
    from stream_r1.shapes.build import world_config

    preset, extra = METHODS[method]
    layered = preset_overrides(preset) if preset else []
    return world_config(world, [*layered, *extra, f"train.seed={seed}", f"train.num_optimizer_steps={steps}"])


def intra_rows(cfg: RunConfig, reward: object, videos: object, n: int, stride: int = 1) -> list[dict]:
    """W_intra vs object mask for ``n`` videos, every ``stride``-th (one per prompt when ``stride`` is the videos
    per prompt), heatmaps as nested lists."""
    from stream_r1.shapes.saliency import intra_vs_mask

    r = cfg.rollout
    rows = []
    pairs = list(zip(videos.frames, videos.prompts, strict=True))[::stride]  # type: ignore[attr-defined]
    for frames, prompt in pairs[:n]:
        res = intra_vs_mask(reward, frames, prompt, (cfg.eval.num_frames, r.latent_height, r.latent_width), cfg.reward)  # type: ignore[arg-type]
        rows.append(
            {
                "prompt": prompt,
                "correlation": res.correlation,
                "w_intra": res.w_intra.tolist(),
                "coverage": res.coverage.tolist(),
            }
        )
    return rows


def run(args: argparse.Namespace) -> dict:
    import torch

    from stream_r1.config.derived import checkpoint_path
    from stream_r1.reward.model import VideoRewardModel
    from stream_r1.reward.preprocess import PreprocessOptions
    from stream_r1.shapes.build import build_world, world_config
    from stream_r1.shapes.sampling import sample_student, sample_teacher, score_videos
    from stream_r1.shapes.world import split_prompts
    from stream_r1.train.entry import run_training

    torch.set_num_threads(args.threads)
    world = build_world(args.world, args.size)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base_cfg = world_config(world)
    reward = VideoRewardModel.from_checkpoint(checkpoint_path(base_cfg, "reward"))
    opts = PreprocessOptions.from_config(base_cfg.reward)
    _, held = split_prompts()
    prompts = [p for p in held for _ in range(args.eval_videos)]
    cache = work / "text_cache"
    results: dict = {"args": vars(args), "rows": {}}
    out = Path(args.out)

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")

    if args.references:
        t0 = time.perf_counter()
        results["rows"]["teacher"] = [
            score_videos(sample_teacher(base_cfg, prompts, base_cfg.eval.seed, cache), reward, opts)
        ]
        results["rows"]["ode_init"] = [
            score_videos(sample_student(base_cfg, None, prompts, base_cfg.eval.seed, cache), reward, opts)
        ]
        save()
        print(f"teacher and ODE-init evaluated in {time.perf_counter() - t0:.0f} s", flush=True)
    for method in args.methods:
        for seed in args.seeds:
            cfg = method_config(world, method, seed, args.steps)
            run_dir = work / f"{method}_seed{seed}"
            t0 = time.perf_counter()
            if not (run_dir / "final" / "model.pt").is_file():
                run_training(cfg, run_dir)
            train_s = time.perf_counter() - t0
            ema = cfg.eval.use_ema and cfg.train.ema_start_raw_step < args.steps * cfg.train.grad_accum_steps
            videos = sample_student(cfg, run_dir / "final" / "model.pt", prompts, cfg.eval.seed, cache, use_ema=ema)
            row = {**score_videos(videos, reward, opts), "train_seconds": train_s, "seed": seed}
            if cfg.reward.intra and method == "stream_r1":
                intra = intra_rows(cfg, reward, videos, args.intra_videos, stride=args.eval_videos)
                row["intra_vs_mask"] = intra
                row["intra_correlation"] = statistics.fmean(r["correlation"] for r in intra)
            results["rows"].setdefault(method, []).append(row)
            save()
            print(
                f"{method} seed {seed}: Total {row['total']:.3f} degraded {row['degraded']:.2f} ({train_s:.0f} s)",
                flush=True,
            )
    return results


def _fmt(values: list[float], scale: float) -> str:
    if len(values) == 1:
        return f"{scale * values[0]:.2f}"
    return f"{scale * statistics.fmean(values):.2f} ± {scale * statistics.stdev(values):.2f}"


def markdown(results: dict) -> str:
    """The table: one row per model, mean ± std over seeds (scores x 100 as in VBench)."""
    head = "| Model | Seeds | FPS↑ | Total↑ | Quality↑ | Semantic↑ | Degraded↓ | VQ↑ | MQ↑ | TA↑ |"
    lines = [head, "|" + "|".join([":--"] + [":-:"] * 9) + "|"]
    for key, rows in results["rows"].items():
        cells = [LABELS.get(key, key), str(len(rows))]
        for col in COLUMNS:
            scale = 100.0 if col in ("total", "quality", "semantic", "degraded") else 1.0
            vals = [r[col] for r in rows if col in r]
            cells.append(_fmt(vals, scale) if vals else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", default=".cache/shapes-world", help="shapes world directory (built if missing)")
    p.add_argument("--size", default="default", help="world size when it has to be built")
    p.add_argument("--work", default="/tmp/shapes-ablation", help="run directories and caches")
    p.add_argument("--steps", type=int, default=60, help="optimizer steps per run (same for every method)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--methods", nargs="+", default=["plain_dmd", "reward_forcing", "stream_r1"], choices=sorted(METHODS)
    )
    p.add_argument("--eval-videos", type=int, default=2, help="videos per held-out prompt")
    p.add_argument("--intra-videos", type=int, default=4, help="Stream-R1 rollouts compared with the object mask")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-references", dest="references", action="store_false", help="skip the teacher/ODE-init rows")
    p.add_argument("--out", default="/tmp/shapes_ablation.json")
    p.add_argument("--markdown", nargs="+", metavar="JSON", help="only print the table of these result files (merged)")
    args = p.parse_args()
    if args.markdown:
        merged: dict = {"rows": {}}
        for f in args.markdown:
            for key, rows in json.loads(Path(f).read_text(encoding="utf-8"))["rows"].items():
                merged["rows"].setdefault(key, []).extend(rows)
        print(markdown(merged))
        return 0
    print(markdown(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
