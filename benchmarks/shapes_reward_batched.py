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

It prints the loss every 50 steps and the held-out Spearman per axis (VQ, MQ, TA) on held-out prompts and seeds::

    .venv/bin/python benchmarks/shapes_reward_batched.py --steps 300 --batch 16 --lr 3e-4
    .venv/bin/python benchmarks/shapes_reward_batched.py --steps 300 --batch 16 --train full --lr 1e-3 --rubric none
    .venv/bin/python benchmarks/shapes_reward_batched.py --steps 300 --batch 16 --train full --lr 1e-3 --readout vit
    .venv/bin/python benchmarks/shapes_reward_batched.py --steps 1500 --batch 16 --train full --lr 1e-3 \
        --rubric none --llm 64 4 4 2          # a wider base LLM: hidden 64, 4 heads, 4 key/value heads, 2 layers
"""

from __future__ import annotations

import argparse
import json
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
    IM_END,
    IM_START,
    REWARD_AXES,
    REWARD_TOKENS,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
)
from stream_r1.reward.tiny import (  # noqa: E402
    TINY_LORA_ALPHA,
    TINY_LORA_RANK,
    lora_target_names,
    tiny_qwen2vl_config,
    write_tiny_base,
)
from stream_r1.shapes.reward import (  # noqa: E402
    WORLD_WORDS,
    LabelledVideo,
    LoRADelta,
    _corrupt,  # the build's own prompt corruption (1-3 attributes changed)
    held_out_examples,
    rank_correlation,
    world_labels,
)
from stream_r1.shapes.sizes import get_size  # noqa: E402
from stream_r1.shapes.world import (  # noqa: E402
    DEGRADATIONS,
    render_scene,
    sample_scene,
    scaled,
    split_prompts,
)

GROUP = 4
"""Videos per group shown with one prompt (the pairs of the Bradley-Terry loss)."""


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


class BatchedReward(nn.Module):
    """Scores ``[B, 3]`` of a batch of videos with one forward of the ViT and of the LLM."""

    def __init__(self, model: VideoRewardModel, rubric: str, readout: str, num_video_tokens: int) -> None:
        super().__init__()
        self.model, self.rubric, self.readout = model, rubric, readout
        hidden = model.backbone.config.text_config.hidden_size
        self.vit_head = nn.Linear(num_video_tokens * hidden, len(REWARD_AXES))

    def _ids(self, prompt: str, n: int) -> torch.Tensor:
        if self.rubric == "full":
            return self.model.encode_prompt(prompt, n)
        rewards = " ".join(REWARD_TOKENS[a] for a in REWARD_AXES)
        text = f"{IM_START}user\n{VISION_START}{VIDEO_PAD * n}{VISION_END}{prompt} {rewards}{IM_END}"
        return self.model.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]

    def forward(self, videos: list[RewardVideo], prompts: list[str]) -> torch.Tensor:
        backbone = self.model.backbone
        pixels = torch.cat([patchify(v.x) for v in videos])
        grid = torch.cat([v.grid_tensor() for v in videos])
        emb = backbone.model.visual(pixels, grid_thw=grid).pooler_output  # [B * M, D]
        if self.readout == "vit":
            return self.vit_head(emb.reshape(len(videos), -1))
        ids = torch.cat([self._ids(p, videos[0].num_video_tokens) for p in prompts])  # same length: fixed grammar
        embeds = backbone.get_input_embeddings()(ids)
        mask = (ids == self.model.video_token_id).unsqueeze(-1)
        embeds = embeds.masked_scatter(mask.expand_as(embeds), emb.to(embeds.dtype))
        b, length = ids.shape
        pos = torch.arange(length).view(1, 1, length).expand(3, b, length)
        hidden = backbone.model.language_model(inputs_embeds=embeds, position_ids=pos, use_cache=False).last_hidden_state
        rows = hidden[:, self.model.reward_positions(ids[:1])]  # [B, 3, D]
        return self.model.rm_head(rows)[..., 0]


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


def _loss(scores: torch.Tensor, targets: torch.Tensor, pair_weight: float) -> torch.Tensor:
    """Mean squared error + ``pair_weight`` x Bradley-Terry over the pairs of each group (label gap > 0.05)."""
    loss = ((scores - targets) ** 2).mean()
    if pair_weight:
        s, y = scores.view(-1, GROUP, 3), targets.view(-1, GROUP, 3)
        ds, dy = s.unsqueeze(2) - s.unsqueeze(1), y.unsqueeze(2) - y.unsqueeze(1)
        w = (dy.abs() > 0.2).float()  # targets are 4 x label: a label gap above 0.05
        loss = loss + pair_weight * (nn.functional.softplus(-ds * dy.sign()) * w).sum() / w.sum().clamp_min(1.0)
    return loss


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
    ap.add_argument("--size", default="ci", help="world size whose frames/pixels are used")
    ap.add_argument("--held", type=int, default=96, help="held-out videos (held-out prompts and seeds)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.batch % GROUP:
        ap.error(f"--batch {args.batch} must be a multiple of {GROUP}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    ws = get_size(args.size)
    opts = PreprocessOptions()
    with tempfile.TemporaryDirectory() as tmp:
        backbone, tokenizer = write_tiny_base(Path(tmp), seed=args.seed, extra_words=WORLD_WORDS,
                                              base_config=base_config(*args.llm) if args.llm else None)
    ids = {a: tokenizer.convert_tokens_to_ids(REWARD_TOKENS[a]) for a in REWARD_AXES}
    rm_head = nn.Linear(backbone.config.text_config.hidden_size, 1, bias=False)
    model = VideoRewardModel(backbone, rm_head, tokenizer, ids, dict.fromkeys(REWARD_AXES, 0.0),
                             dict.fromkeys(REWARD_AXES, 1.0))
    train_prompts, _ = split_prompts()
    probe = preprocess_frames(labelled_group(train_prompts, 0, ws.pixel_frames, ws.pixels)[0].frames, opts)
    scorer = BatchedReward(model, args.rubric, args.readout, probe.num_video_tokens)
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
    start, losses = time.process_time(), []
    backbone.train()
    for step in range(args.steps):
        group_seeds = [args.seed * 1_000_003 + step * 31 + i for i in range(args.batch // GROUP)]
        batch = [ex for s in group_seeds for ex in labelled_group(train_prompts, s, ws.pixel_frames, ws.pixels)]
        targets = torch.tensor([[4 * ex.labels[a] - 2 for a in REWARD_AXES] for ex in batch])
        loss = _loss(scorer([preprocess_frames(ex.frames, opts) for ex in batch], [ex.prompt for ex in batch]),
                     targets, args.pair_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*body, *heads], 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if step % 50 == 0 or step == args.steps - 1:
            recent = losses[-50:]
            print(f"step {step}: loss {sum(recent) / len(recent):.4f} ({time.process_time() - start:.0f} CPU s)",
                  flush=True)
    backbone.eval()
    held = held_out_examples(args.held, ws.pixel_frames, ws.pixels)
    with torch.no_grad():
        scores = torch.cat([scorer([preprocess_frames(ex.frames, opts) for ex in held[i:i + 16]],
                                   [ex.prompt for ex in held[i:i + 16]]) for i in range(0, len(held), 16)])
    spearman = {a: round(rank_correlation(scores[:, k].tolist(), [ex.labels[a] for ex in held]), 3)
                for k, a in enumerate(REWARD_AXES)}
    label_var = torch.tensor([[4 * ex.labels[a] - 2 for a in REWARD_AXES] for ex in held]).var(dim=0).mean()
    print(json.dumps({"args": vars(args), "held_out_spearman": spearman, "first_loss": round(losses[0], 4),
                      "last50_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4),
                      "held_out_target_variance": round(float(label_var), 4),
                      "cpu_s": round(time.process_time() - start)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
