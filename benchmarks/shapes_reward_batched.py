"""Can the shapes world's VideoReward learn to rank at all? Batched training with a pairwise loss, three ablations.

Diagnostic for the world's reward (docs/benchmarks.md "Shapes world"). ``stream_r1/shapes/reward.py`` trains one
video per step by regression; this script trains the same tiny Qwen2-VL VideoReward (random base of
``write_tiny_base``, LoRA on the LLM linears + ViT/merger/embeddings, or every weight with ``--train full``) on
batches of ``--batch`` videos in groups of 4 shown with one prompt, with a regression loss on the targets
``4 * label - 2`` plus a Bradley-Terry loss between the videos of a group (which cancels what the shown prompt
contributes to every score: VideoAlign's loss on pairs). Ablations locate where learning stops:

* ``--rubric none``: the reward tokens follow the video and the prompt directly (about 25 tokens), without the
  ~770-token VideoAlign rubric in between: if this learns and the full rubric does not, the rubric dilutes the video;
* ``--readout vit``: a linear head on the flattened merged ViT tokens, no LLM at all (TA cannot be learnt then:
  it needs the prompt): if this does not learn VQ / MQ either, the ViT is the bottleneck, not the LLM.

Levers of the fourth pass (docs/benchmarks.md "Shapes world"): ``--init fan_in`` redraws the base from
N(0, 1/fan_in) (transformers draws every weight of the tiny base from N(0, 0.02), tiny for 32-wide layers);
``--groups scene`` trains on minimal pairs (:func:`scene_group`); ``--route`` starts the LLM reading the video and
the prompt (:func:`route_init`); ``--rubric-steps N`` is a curriculum (short inputs first, the last N steps and the
evaluation on the full rubric, where the script checks that its batched forward equals ``VideoRewardModel``'s);
``--min-pixels`` sets the reward's resize, ``--pixels`` the frame side (64: the world at 64 px); the script also prints how much the untrained states differ between videos.
Fifth pass: ``--motion N`` starts N patch-embedding filters as temporal differences, ``--temporal G`` routes a layer-0
head of every video token one temporal patch back (:mod:`stream_r1.shapes.reward_init`); ``--build`` measures the
build's own recipe (``stream_r1.shapes.reward.train_videoreward`` with ``--steps`` / ``--rubric-steps``, then
``reward_quality`` through the production loader). Every run prints ``spearman_ceiling``: what untied scores can
reach against the tied held-out labels.

It prints the loss every 50 steps and the held-out Spearman per axis (VQ, MQ, TA) on held-out prompts and seeds::

    .venv/bin/python benchmarks/shapes_reward_batched.py --steps 300 --batch 16 --lr 3e-4
    .venv/bin/python benchmarks/shapes_reward_batched.py --steps 300 --batch 16 --train full --lr 1e-3 --rubric none
    .venv/bin/python benchmarks/shapes_reward_batched.py --steps 300 --batch 16 --train full --lr 1e-3 --readout vit
    .venv/bin/python benchmarks/shapes_reward_batched.py --steps 1500 --batch 16 --train full --lr 1e-3 \
        --rubric none --llm 64 4 4 2          # a wider base LLM: hidden 64, 4 heads, 4 key/value heads, 2 layers
    .venv/bin/python benchmarks/shapes_reward_batched.py --steps 3000 --batch 16 --train full --lr 1e-3 \
        --init fan_in --groups scene --route --rubric none --rubric-steps 200   # the fourth pass's best recipe
    .venv/bin/python benchmarks/shapes_reward_batched.py --build --steps 1000 --rubric-steps 50   # the ci build's
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stream_r1.reward.model import VideoRewardModel  # noqa: E402
from stream_r1.reward.preprocess import PreprocessOptions, RewardVideo, patchify, preprocess_frames  # noqa: E402
from stream_r1.reward.prompt import (  # noqa: E402
    REWARD_AXES,
    REWARD_TOKENS,
)
from stream_r1.reward.tiny import (  # noqa: E402
    TINY_LORA_ALPHA,
    TINY_LORA_RANK,
    lora_target_names,
    tiny_qwen2vl_config,
    write_tiny_base,
)
from stream_r1.shapes.reward import (  # noqa: E402
    GROUP,
    WORLD_WORDS,
    BatchedReward,
    LabelledVideo,
    _corrupt,  # the build's own prompt corruption (1-3 attributes changed)
    held_out_examples,
    pair_regression_loss,
    rank_correlation,
    reward_quality,
    scene_group,
    spearman_ceiling,
    train_videoreward,
    world_labels,
)
from stream_r1.shapes.reward_init import (  # noqa: E402
    ROUTES,
    fan_in_init,
    motion_init,
    normed_video_marker,
    route_init,
    temporal_route_init,
)
from stream_r1.shapes.sizes import get_size  # noqa: E402
from stream_r1.shapes.world import (  # noqa: E402
    DEGRADATIONS,
    render_scene,
    sample_scene,
    scaled,
    split_prompts,
)


class LoRADelta(nn.Module):
    """Parametrization ``W -> W + scale * B @ A`` (B starts at zero, so training starts from the base)."""

    def __init__(
        self, out_features: int, in_features: int, rank: int, scale: float, generator: torch.Generator
    ) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.randn(rank, in_features, generator=generator) / in_features**0.5)
        self.B = nn.Parameter(torch.zeros(out_features, rank))
        self.scale = scale

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scale * (self.B @ self.A).to(weight.dtype)



def labelled_group(prompts: list[str], seed: int, frames: int, size: int) -> list[LabelledVideo]:
    """``GROUP`` videos shown with one prompt: each renders that prompt or a changed one, clean or degraded."""
    rng = random.Random(seed)
    prompt = rng.choice(prompts)
    shown = _corrupt(prompt, rng) if rng.random() < 0.5 else prompt
    out = []
    for j in range(GROUP):
        s = seed * 97 + j
        r = random.Random(s)
        mode = r.choice(["clean", "clean", "blur", "jitter", "drift"])
        strength = r.uniform(0.25, 1.5)
        content = prompt if r.random() < 0.5 else _corrupt(prompt, r)
        video = render_scene(sample_scene(content, s), frames, size, scaled(DEGRADATIONS[mode], strength), s)
        out.append(LabelledVideo(video, shown, world_labels(video, shown)))
    return out


class BenchReward(BatchedReward):
    """:class:`BatchedReward` with a second readout: ``vit``, a linear head on the flattened merged ViT tokens."""

    def __init__(self, model: VideoRewardModel, rubric: str, readout: str, num_video_tokens: int) -> None:
        super().__init__(model, "full" if rubric == "full" else "short")
        self.readout = readout
        hidden = model.backbone.config.text_config.hidden_size
        self.vit_head = nn.Linear(num_video_tokens * hidden, len(REWARD_AXES))

    def forward(self, videos: list[RewardVideo], prompts: list[str]) -> torch.Tensor:
        if self.readout == "vit":
            return self.vit_head(self.video_embeds(videos).reshape(len(videos), -1))
        return super().forward(videos, prompts)


@torch.no_grad()
def init_spread(scorer: BenchReward, batch: list[LabelledVideo], opts: PreprocessOptions) -> dict[str, float]:
    """How much the untrained model's states differ between the videos of ``batch``, shown with one prompt.

    Mean over videos of ``|x - mean x| / |x|`` for the merged ViT tokens and for the reward-token states that
    ``rm_head`` reads (the final-norm output): near 0 means the heads start almost blind to the video.
    """
    model, captured = scorer.model, []
    hook = model.rm_head.register_forward_pre_hook(lambda _m, a: captured.append(a[0]))
    videos = [preprocess_frames(ex.frames, opts) for ex in batch]
    emb = model.backbone.model.visual(
        torch.cat([patchify(v.x) for v in videos]), grid_thw=torch.cat([v.grid_tensor() for v in videos])
    ).pooler_output.view(len(videos), -1)
    readout, scorer.readout = scorer.readout, "llm"
    scorer(videos, [batch[0].prompt] * len(batch))
    scorer.readout = readout
    hook.remove()

    def spread(x: torch.Tensor) -> float:
        x = x.flatten(1)
        return round(float(((x - x.mean(0)).norm(dim=1) / x.norm(dim=1)).mean()), 4)

    return {"video_tokens": spread(emb), "reward_tokens": spread(captured[0])}


def base_config(hidden: int, heads: int, kv_heads: int, layers: int) -> Callable[[dict[str, int]], object]:
    """A ``write_tiny_base`` config builder: the tiny Qwen2-VL with a resized LLM (ViT unchanged)."""

    def build(token_ids: dict[str, int]) -> object:
        cfg = tiny_qwen2vl_config(token_ids)
        text = cfg.text_config
        text.hidden_size, text.num_hidden_layers, text.intermediate_size = hidden, layers, 2 * hidden
        text.num_attention_heads, text.num_key_value_heads = heads, kv_heads
        cfg.vision_config.hidden_size = hidden  # the merger projects the ViT into the LLM's width
        return cfg

    return build


def ceiling(n: int, ws: object) -> dict[str, float]:
    """:func:`spearman_ceiling` per axis on the ``n`` held-out videos (what untied scores can reach at most)."""
    held = held_out_examples(n, ws.pixel_frames, ws.pixels)
    return {a: round(spearman_ceiling([ex.labels[a] for ex in held]), 3) for a in REWARD_AXES}


def measure_build_recipe(args: argparse.Namespace, ws: object, opts: PreprocessOptions) -> int:
    """``--build``: the build's own training and held-out measurement, printed as one JSON line."""
    start = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        path, losses = train_videoreward(Path(tmp) / "VideoReward", args.steps, args.rubric_steps, ws.pixel_frames,
                                         ws.pixels, opts, args.seed)
        trained = time.process_time() - start
        quality = reward_quality(path, args.held, ws.pixel_frames, ws.pixels, opts)
    print(json.dumps({"args": vars(args), "held_out_spearman": {k.removeprefix("spearman_"): round(v, 3)
                                                                for k, v in quality.items()},
                      "spearman_ceiling": ceiling(args.held, ws),
                      "last50_loss": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 4),
                      "train_cpu_s": round(trained), "cpu_s": round(time.process_time() - start)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16, help=f"videos per step (a multiple of {GROUP})")
    ap.add_argument("--lr", type=float, default=3e-4, help="learning rate of the ViT / LLM parts")
    ap.add_argument("--head-lr", type=float, default=3e-3, help="learning rate of rm_head / the ViT readout")
    ap.add_argument("--pair-weight", type=float, default=1.0, help="weight of the Bradley-Terry loss (0: off)")
    ap.add_argument("--train", choices=("lora", "full"), default="lora", help="LoRA (VideoAlign) or every weight")
    ap.add_argument("--rubric", choices=("full", "none"), default="full")
    ap.add_argument("--readout", choices=("llm", "vit"), default="llm")
    ap.add_argument("--llm", type=int, nargs=4, metavar=("HIDDEN", "HEADS", "KV_HEADS", "LAYERS"), default=None,
                    help="resize the base LLM (default: the tiny base, 32 2 1 2)")
    ap.add_argument("--init", choices=("hf", "fan_in"), default="hf",
                    help="base weights: transformers' N(0, 0.02) everywhere, or N(0, 1/fan_in) (embeddings N(0, 1))")
    ap.add_argument("--min-pixels", type=int, default=3136, help="reward.min_pixels (frame area the video is resized to)")
    ap.add_argument("--warmup", type=int, default=0, help="linear warm-up steps, then cosine decay to 0")
    ap.add_argument("--groups", choices=("mixed", "scene"), default="mixed",
                    help="mixed: 4 independent videos per shown prompt; scene: minimal pairs (scene_group)")
    ap.add_argument("--rubric-steps", type=int, default=0,
                    help="curriculum: the last N steps (and the evaluation) with the full rubric, the earlier ones as --rubric")
    ap.add_argument("--route", choices=("off", *ROUTES), nargs="?", const="words", default="off",
                    help="route_init with this table (bare --route: words): the LLM starts reading the video and prompt")
    ap.add_argument("--temporal", type=float, default=0.0,
                    help="temporal_route_init with this gain (0: off): layer-0 head 1 of video tokens reads the previous slice")
    ap.add_argument("--motion", type=int, default=0,
                    help="patch-embedding filters that start as temporal differences (motion_init; 0: off)")
    ap.add_argument("--size", default="ci", help="world size whose frames/pixels are used")
    ap.add_argument("--pixels", type=int, default=None, help="frame side instead of the size's (e.g. 64)")
    ap.add_argument("--held", type=int, default=96, help="held-out videos (held-out prompts and seeds)")
    ap.add_argument("--build", action="store_true",
                    help="measure the build's recipe instead: stream_r1.shapes.reward.train_videoreward with --steps "
                         "and --rubric-steps, then reward_quality on --held videos through the production loader")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.batch % GROUP:
        ap.error(f"--batch {args.batch} must be a multiple of {GROUP}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    ws = get_size(args.size)
    if args.pixels:
        ws = dataclasses.replace(ws, pixels=args.pixels)
    opts = PreprocessOptions(min_pixels=args.min_pixels)
    if args.build:
        return measure_build_recipe(args, ws, opts)
    with tempfile.TemporaryDirectory() as tmp:
        backbone, tokenizer = write_tiny_base(Path(tmp), seed=args.seed, extra_words=WORLD_WORDS,
                                              base_config=base_config(*args.llm) if args.llm else None)
    if args.init == "fan_in":
        fan_in_init(backbone, args.seed)
    if args.motion:
        motion_init(backbone, args.motion)
    ids = {a: tokenizer.convert_tokens_to_ids(REWARD_TOKENS[a]) for a in REWARD_AXES}
    rm_head = nn.Linear(backbone.config.text_config.hidden_size, 1, bias=False)
    model = VideoRewardModel(backbone, rm_head, tokenizer, ids, dict.fromkeys(REWARD_AXES, 0.0),
                             dict.fromkeys(REWARD_AXES, 1.0))
    if args.route != "off":
        route_init(model, args.route)
    train_prompts, _ = split_prompts()
    probe = preprocess_frames(labelled_group(train_prompts, 0, ws.pixel_frames, ws.pixels)[0].frames, opts)
    if args.temporal:
        _, gh, gw = probe.grid_thw
        temporal_route_init(model, gh * gw // 4, normed_video_marker(model, probe), gain=args.temporal)
    scorer = BenchReward(model, args.rubric, args.readout, probe.num_video_tokens)
    backbone.requires_grad_(False)
    if args.train == "full":
        body = list(backbone.parameters())
    else:
        g = torch.Generator().manual_seed(args.seed)
        modules = dict(backbone.named_modules())
        body = [p for n, p in backbone.named_parameters() if n.startswith("model.visual.") or "embed_tokens" in n]
        for name in lora_target_names(backbone):
            lin = modules[name]
            delta = LoRADelta(lin.out_features, lin.in_features, TINY_LORA_RANK, TINY_LORA_ALPHA / TINY_LORA_RANK, g)
            parametrize.register_parametrization(lin, "weight", delta)
            body += list(delta.parameters())
    for p in body:
        p.requires_grad_(True)
    heads = [*rm_head.parameters(), *scorer.vit_head.parameters()]
    opt = torch.optim.AdamW([{"params": body, "lr": args.lr}, {"params": heads, "lr": args.head_lr}], weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / args.warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, max(0, k - args.warmup) / max(1, args.steps - args.warmup)))) if args.warmup else 1.0)
    spread = init_spread(scorer, labelled_group(train_prompts, 1, ws.pixel_frames, ws.pixels) * 4, opts)
    print(f"untrained relative spread between videos: {spread}", flush=True)
    start, losses = time.process_time(), []
    backbone.train()
    for step in range(args.steps):
        if step == args.steps - args.rubric_steps:
            scorer.rubric = "full"
        group_seeds = [args.seed * 1_000_003 + step * 31 + i for i in range(args.batch // GROUP)]
        make = scene_group if args.groups == "scene" else labelled_group
        batch = [ex for s in group_seeds for ex in make(train_prompts, s, ws.pixel_frames, ws.pixels)]
        targets = torch.tensor([[4 * ex.labels[a] - 2 for a in REWARD_AXES] for ex in batch])
        loss = pair_regression_loss(scorer([preprocess_frames(ex.frames, opts) for ex in batch], [ex.prompt for ex in batch]),
                     targets, args.pair_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*body, *heads], 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if step % 50 == 0 or step == args.steps - 1:
            recent = losses[-50:]
            print(f"step {step}: loss {sum(recent) / len(recent):.4f} ({time.process_time() - start:.0f} CPU s)",
                  flush=True)
    backbone.eval()
    if scorer.rubric == "full" and args.readout == "llm":  # the batched path is the production forward
        ex = held_out_examples(1, ws.pixel_frames, ws.pixels)[0]
        video = preprocess_frames(ex.frames, opts)
        with torch.no_grad():
            one = model(patchify(video.x), video.grid_tensor(), model.encode_prompt(ex.prompt, video.num_video_tokens))
            assert torch.allclose(one, scorer([video], [ex.prompt])[0], atol=1e-4), "batched != VideoRewardModel"
    held = held_out_examples(args.held, ws.pixel_frames, ws.pixels)
    with torch.no_grad():
        scores = torch.cat([scorer([preprocess_frames(ex.frames, opts) for ex in held[i:i + 16]],
                                   [ex.prompt for ex in held[i:i + 16]]) for i in range(0, len(held), 16)])
    spearman = {a: round(rank_correlation(scores[:, k].tolist(), [ex.labels[a] for ex in held]), 3)
                for k, a in enumerate(REWARD_AXES)}
    label_var = torch.tensor([[4 * ex.labels[a] - 2 for a in REWARD_AXES] for ex in held]).var(dim=0).mean()
    print(json.dumps({"args": vars(args), "held_out_spearman": spearman, "spearman_ceiling": ceiling(args.held, ws),
                      "init_spread": spread, "first_loss": round(losses[0], 4),
                      "last50_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4),
                      "held_out_target_variance": round(float(label_var), 4),
                      "cpu_s": round(time.process_time() - start)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
