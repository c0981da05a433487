"""A tiny VideoReward trained on shapes-world labels, written in the official checkpoint layout.

VideoAlign's recipe at a tiny size: LoRA on every LLM linear (a ``torch.nn.utils.parametrize``
parametrization ``W + (alpha / r) B A`` of the frozen base weight), the ViT, merger, token embeddings
and ``rm_head`` tuned in full. The three heads regress ground-truth labels measured by the world's
detectors (:mod:`stream_r1.shapes.metrics`) on videos with graded degradations:

* VQ <- mean of the sharpness and colour-stability scores (what a frame looks like);
* MQ <- the motion-smoothness score;
* TA <- the semantic score against the prompt shown, which is the video's own prompt half the time
  and a prompt with 1-3 attributes changed otherwise.

Targets are ``4 * label - 2`` (logits in [-2, 2]); the written ``inference_config`` holds the mean and
std of the logits on held-out videos, so the loader's z-rewards are standardised as VideoReward's are.
VideoAlign trains with a Bradley-Terry loss on human pairs; with exact labels a regression is the
direct equivalent and needs no pairs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from stream_r1.reward.model import VideoRewardModel
from stream_r1.reward.preprocess import PreprocessOptions, patchify, preprocess_frames
from stream_r1.reward.prompt import REWARD_AXES, REWARD_TOKENS
from stream_r1.reward.tiny import (
    TINY_LORA_ALPHA,
    TINY_LORA_RANK,
    lora_target_names,
    save_videoreward_checkpoint,
    write_tiny_base,
)
from stream_r1.shapes.metrics import score_video
from stream_r1.shapes.world import (
    COLORS,
    DEGRADATIONS,
    DIRECTIONS,
    HELD_OUT_SEED_BASE,
    SHAPES,
    make_prompt,
    parse_prompt,
    render_scene,
    sample_scene,
    scaled,
    split_prompts,
)
from stream_r1.utils.progress import progress

WORLD_WORDS: tuple[str, ...] = ("a", "moving", *COLORS, *SHAPES, *DIRECTIONS)
"""The prompt vocabulary every tokenizer of the world must know."""


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


@dataclass(frozen=True, slots=True)
class LabelledVideo:
    """A reward training/evaluation example."""

    frames: torch.Tensor
    prompt: str
    labels: dict[str, float]


def world_labels(frames: torch.Tensor, prompt: str) -> dict[str, float]:
    """Ground-truth VQ / MQ / TA labels in [0, 1] of ``frames`` shown with ``prompt``."""
    s = score_video(frames, prompt)
    return {"VQ": (s["sharpness"] + s["stability"]) / 2, "MQ": s["smoothness"], "TA": s["semantic"]}


def _corrupt(prompt: str, rng: random.Random) -> str:
    parts = list(parse_prompt(prompt))
    choices = (list(COLORS), list(SHAPES), list(DIRECTIONS))
    for i in rng.sample(range(3), rng.randint(1, 3)):
        parts[i] = rng.choice([v for v in choices[i] if v != parts[i]])
    return make_prompt(*parts)


def labelled_video(prompts: list[str], seed: int, frames: int, size: int) -> LabelledVideo:
    """One example: a graded degradation (or none) and the true or a corrupted prompt."""
    rng = random.Random(seed)
    prompt = rng.choice(prompts)
    mode = rng.choice(["clean", "clean", "blur", "jitter", "drift"])
    strength = rng.uniform(0.25, 1.5)
    video = render_scene(sample_scene(prompt, seed), frames, size, scaled(DEGRADATIONS[mode], strength), seed)
    shown = _corrupt(prompt, rng) if rng.random() < 0.5 else prompt
    return LabelledVideo(video, shown, world_labels(video, shown))


def _logits(model: VideoRewardModel, ex: LabelledVideo, opts: PreprocessOptions) -> torch.Tensor:
    video = preprocess_frames(ex.frames, opts)
    ids = model.encode_prompt(ex.prompt, video.num_video_tokens)
    return model(patchify(video.x), video.grid_tensor(), ids)


def held_out_examples(n: int, frames: int, size: int) -> list[LabelledVideo]:
    """``n`` examples on held-out prompts and seeds."""
    _, held = split_prompts()
    return [labelled_video(held, HELD_OUT_SEED_BASE + i, frames, size) for i in range(n)]


def train_videoreward(
    path: Path, steps: int, frames: int, size: int, opts: PreprocessOptions, seed: int
) -> tuple[Path, list[float]]:
    """Train a tiny VideoReward and write it in the official layout under ``path`` (empty or absent).

    Returns:
        ``(path, per-step losses)``.
    """
    torch.manual_seed(seed)
    backbone, tokenizer = write_tiny_base(path, seed=seed, extra_words=WORLD_WORDS)
    backbone.requires_grad_(False)
    hidden = backbone.config.text_config.hidden_size
    g = torch.Generator().manual_seed(seed)
    rm_head = nn.Linear(hidden, 1, bias=False)
    scale = TINY_LORA_ALPHA / TINY_LORA_RANK
    mods = dict(backbone.named_modules())
    deltas: dict[str, LoRADelta] = {}
    for name in lora_target_names(backbone):
        lin = mods[name]
        deltas[name] = LoRADelta(lin.out_features, lin.in_features, TINY_LORA_RANK, scale, g)
        parametrize.register_parametrization(lin, "weight", deltas[name])
    tuned = [p for n, p in backbone.named_parameters() if n.startswith("model.visual.") or "embed_tokens" in n]
    for p in tuned:
        p.requires_grad_(True)
    ids = {a: tokenizer.convert_tokens_to_ids(REWARD_TOKENS[a]) for a in REWARD_AXES}
    model = VideoRewardModel(
        backbone, rm_head, tokenizer, ids, dict.fromkeys(REWARD_AXES, 0.0), dict.fromkeys(REWARD_AXES, 1.0)
    )
    params = [*tuned, *rm_head.parameters(), *(p for d in deltas.values() for p in d.parameters())]
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.0)
    train, _ = split_prompts()
    losses = []
    backbone.train()
    for step in progress(range(steps), desc="videoreward (videos)", total=steps):
        ex = labelled_video(train, seed * 1_000_003 + step, frames, size)
        target = torch.tensor([4 * ex.labels[a] - 2 for a in REWARD_AXES])
        loss = ((_logits(model, ex, opts) - target) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    backbone.eval()
    lora = {n: (d.A.detach().clone(), d.B.detach().clone()) for n, d in deltas.items()}
    for name in deltas:
        parametrize.remove_parametrizations(mods[name], "weight", leave_parametrized=False)
    with torch.no_grad():
        for name, (a, b) in lora.items():  # stats with the adapted weights, as the loader merges them
            mods[name].weight.add_(scale * b @ a)
        held = torch.stack([_logits(model, ex, opts).float() for ex in held_out_examples(48, frames, size)])
        for name, (a, b) in lora.items():
            mods[name].weight.sub_(scale * b @ a)
    means, stds = held.mean(dim=0), held.std(dim=0).clamp_min(1e-3)
    inference = {}
    for i, a in enumerate(REWARD_AXES):
        inference[f"{a}_mean"], inference[f"{a}_std"] = float(means[i]), float(stds[i])
    save_videoreward_checkpoint(path, backbone, rm_head.weight, lora, inference_config=inference)
    return path, losses


def rank_correlation(x: list[float], y: list[float]) -> float:
    """Spearman's rho (average ranks for ties); NaN when either side is constant."""

    def ranks(v: list[float]) -> torch.Tensor:
        t = torch.tensor(v, dtype=torch.float64)
        order = t.argsort()
        r = torch.empty_like(t)
        r[order] = torch.arange(len(v), dtype=torch.float64)
        for val in t.unique():  # average ranks of ties
            m = t == val
            r[m] = r[m].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = float(rx.norm() * ry.norm())
    return float((rx * ry).sum()) / den if den > 0 else float("nan")


@torch.no_grad()
def reward_quality(path: Path, n: int, frames: int, size: int, opts: PreprocessOptions) -> dict[str, float]:
    """Spearman correlation per axis between the loaded VideoReward's z-scores and the GT labels.

    Loads ``path`` with :meth:`VideoRewardModel.from_checkpoint` (the loaders every run uses).
    """
    model = VideoRewardModel.from_checkpoint(path)
    rows = held_out_examples(n, frames, size)
    scores = [model.score(ex.frames, ex.prompt, opts).z for ex in rows]
    return {
        f"spearman_{a}": rank_correlation([s[a] for s in scores], [ex.labels[a] for ex in rows]) for a in REWARD_AXES
    }
