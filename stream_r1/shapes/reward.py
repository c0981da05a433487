"""A tiny VideoReward trained on shapes-world labels, written in the official checkpoint layout.

The three heads regress ground-truth labels measured by the world's detectors (:mod:`stream_r1.shapes.metrics`) on
videos with graded degradations:

* VQ <- mean of the sharpness and colour-stability scores (what a frame looks like);
* MQ <- the motion-smoothness score;
* TA <- the semantic score against the prompt shown (the video's own prompt or one with 1-3 attributes changed).

Targets are ``4 * label - 2`` (logits in [-2, 2]), trained with a regression plus a Bradley-Terry loss within
minimal-pair groups (:func:`scene_group`: VideoAlign's pairwise loss, where the pairs differ in one thing). The
tiny base starts from the structured initialisation of :mod:`stream_r1.shapes.reward_init` and is trained in full,
on short inputs first and on the full rubric last (docs/benchmarks.md "Shapes world" gives the measured passes).
The written ``inference_config`` holds the mean and std of the logits on held-out videos, so the loader's z-rewards
are standardised as VideoReward's are.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from stream_r1.reward.model import VideoRewardModel
from stream_r1.reward.preprocess import MERGE_SIZE, PreprocessOptions, RewardVideo, patchify, preprocess_frames
from stream_r1.reward.prompt import REWARD_AXES, REWARD_TOKENS, build_short_text
from stream_r1.reward.tiny import (
    TINY_BASE_NAME,
    TINY_LORA_RANK,
    lora_target_names,
    save_videoreward_checkpoint,
    write_tiny_base,
)
from stream_r1.shapes.detect import Measurement, measure
from stream_r1.shapes.metrics import score_measurement
from stream_r1.shapes.reward_init import (
    fan_in_init,
    motion_init,
    normed_video_marker,
    route_init,
    temporal_route_init,
)
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


@dataclass(frozen=True, slots=True)
class LabelledVideo:
    """A reward training/evaluation example."""

    frames: torch.Tensor
    prompt: str
    labels: dict[str, float]


def measurement_labels(m: Measurement, prompt: str) -> dict[str, float]:
    """Ground-truth VQ / MQ / TA labels in [0, 1] of a measured video shown with ``prompt``."""
    s = score_measurement(m, prompt)
    return {"VQ": (s["sharpness"] + s["stability"]) / 2, "MQ": s["smoothness"], "TA": s["semantic"]}


def world_labels(frames: torch.Tensor, prompt: str) -> dict[str, float]:
    """Ground-truth VQ / MQ / TA labels in [0, 1] of ``frames`` shown with ``prompt``."""
    return measurement_labels(measure(frames), prompt)


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


MODES: tuple[str, ...] = tuple(DEGRADATIONS)
"""The world's modes, clean first: a quality group renders one scene in each."""

GROUP = len(MODES)
"""Videos per group shown with one prompt (the pairs of the Bradley-Terry loss): one per mode, or one video with
its true prompt and ``GROUP - 1`` corrupted ones."""


def scene_group(prompts: list[str], seed: int, frames: int, size: int) -> list[LabelledVideo]:
    """``GROUP`` minimal pairs: one scene in every mode (even ``seed``) or one video shown with 4 prompts (odd).

    A quality group renders one scene (same prompt, start and path) clean and in each degraded mode at a graded
    strength, shown with one prompt, so its pairs differ only in the degradation; an alignment group shows one video
    with its true prompt and three prompts with 1-3 attributes changed, so its pairs differ only in the text.
    """
    rng = random.Random(seed)
    prompt = rng.choice(prompts)
    scene = sample_scene(prompt, seed)
    if seed % 2 == 0:
        shown = _corrupt(prompt, rng) if rng.random() < 0.5 else prompt
        videos = [
            render_scene(scene, frames, size, scaled(DEGRADATIONS[m], rng.uniform(0.25, 1.5)), seed) for m in MODES
        ]
        return [LabelledVideo(v, shown, world_labels(v, shown)) for v in videos]
    mode = rng.choice(("clean", *MODES))
    video = render_scene(scene, frames, size, scaled(DEGRADATIONS[mode], rng.uniform(0.25, 1.5)), seed)
    m = measure(video)  # one video: measured once, scored against each prompt shown
    return [
        LabelledVideo(video, s, measurement_labels(m, s))
        for s in [prompt] + [_corrupt(prompt, rng) for _ in range(GROUP - 1)]
    ]


def distinct_videos(batch: list[LabelledVideo], opts: PreprocessOptions) -> tuple[list[RewardVideo], torch.Tensor]:
    """Each distinct video of ``batch`` preprocessed once, and the index of every row's video among them.

    An alignment group of :func:`scene_group` shows one video (one tensor) with ``GROUP`` prompts, so a batch of
    ``B`` rows holds fewer distinct videos; :meth:`BatchedReward.forward` runs the ViT on those only.

    Returns:
        ``(videos, index)``: ``index`` ``[B]`` into ``videos`` (identity of the frames tensor, not its values).
    """
    slots: dict[int, int] = {}
    videos: list[RewardVideo] = []
    index = []
    for ex in batch:
        key = id(ex.frames)
        if key not in slots:
            slots[key] = len(videos)
            videos.append(preprocess_frames(ex.frames, opts))
        index.append(slots[key])
    return videos, torch.tensor(index)


class BatchedReward(nn.Module):
    """Scores ``[B, 3]`` of a batch of videos with one forward of the ViT and of the LLM.

    The same function as :class:`VideoRewardModel` on each video (1-D positions, ``rm_head`` at the reward tokens)
    with ``rubric="full"``; ``rubric="short"`` puts the reward tokens right after the video and the prompt (about 25
    tokens instead of ~790), the cheap inputs of the recipe's first phase.
    """

    def __init__(self, model: VideoRewardModel, rubric: str = "full") -> None:
        super().__init__()
        self.model, self.rubric = model, rubric

    def _ids(self, prompt: str, n: int) -> torch.Tensor:
        if self.rubric == "full":
            return self.model.encode_prompt(prompt, n)
        text = build_short_text(prompt, n)
        return self.model.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]

    def video_embeds(self, videos: list[RewardVideo]) -> torch.Tensor:
        """Merged ViT tokens ``[B * M, D]`` of ``videos`` (one grid each) in one ViT pass."""
        pixels = torch.cat([patchify(v.x) for v in videos])
        return self.model.embed_video(pixels, torch.cat([v.grid_tensor() for v in videos]))

    def forward(self, videos: list[RewardVideo], prompts: list[str], index: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, 3]`` (VQ, MQ, TA) of ``videos`` (same grid) shown with ``prompts``.

        ``index`` ``[B]``: row ``i`` shows ``videos[index[i]]`` (:func:`distinct_videos`), so a video shown with
        several prompts goes through the ViT once; ``None``: one video per row.
        """
        ids = torch.cat([self._ids(p, videos[0].num_video_tokens) for p in prompts])  # same length: fixed grammar
        embeds = self.video_embeds(videos)
        if index is not None:
            embeds = embeds.view(len(videos), -1, embeds.shape[-1])[index].flatten(0, 1)
        return self.model.batch_logits_from_embeds(embeds, ids)


def pair_regression_loss(scores: torch.Tensor, targets: torch.Tensor, pair_weight: float = 1.0) -> torch.Tensor:
    """Mean squared error + ``pair_weight`` x Bradley-Terry over the pairs of each group of ``GROUP`` rows.

    Args:
        scores, targets: ``[B, 3]`` logits and ``4 * label - 2`` targets, ``B`` a multiple of ``GROUP``.
        pair_weight: Weight of the pairwise term (0: regression only). Pairs whose labels differ by <= 0.05 are left out.
    """
    loss = ((scores - targets) ** 2).mean()
    if pair_weight:
        s, y = scores.view(-1, GROUP, 3), targets.view(-1, GROUP, 3)
        ds, dy = s.unsqueeze(2) - s.unsqueeze(1), y.unsqueeze(2) - y.unsqueeze(1)
        w = (dy.abs() > 0.2).float()  # targets are 4 x label: a label gap above 0.05
        loss = loss + pair_weight * (nn.functional.softplus(-ds * dy.sign()) * w).sum() / w.sum().clamp_min(1.0)
    return loss


@dataclass(frozen=True, slots=True)
class RewardRecipe:
    """How the world's VideoReward is trained (docs/benchmarks.md "Shapes world", VideoReward passes).

    Attributes:
        batch: Videos per step (``batch // GROUP`` minimal-pair groups of :func:`scene_group`).
        lr, head_lr: AdamW learning rates of the backbone and of ``rm_head``.
        route: :data:`~stream_r1.shapes.reward_init.ROUTES` table of :func:`route_init`.
        motion_channels: Patch-embedding filters started as temporal differences (:func:`motion_init`; 0: none).
        temporal_gain: Gain of :func:`temporal_route_init` (0: no temporal head).
    """

    batch: int = 16
    lr: float = 1e-3
    head_lr: float = 3e-3
    route: str = "words"
    motion_channels: int = 0
    temporal_gain: float = 0.0


def build_reward_model(
    path: Path, seed: int, recipe: RewardRecipe, probe: RewardVideo | None = None
) -> VideoRewardModel:
    """Write the random tiny base under ``path`` and return its VideoReward with the recipe's initialisation.

    ``probe`` (any preprocessed world video) fixes the video-token grid the temporal route is laid out for; only a
    recipe with ``temporal_gain`` needs it.

    Raises:
        ValueError: ``recipe.temporal_gain`` without a ``probe``.
    """
    backbone, tokenizer = write_tiny_base(path, seed=seed, extra_words=WORLD_WORDS)
    fan_in_init(backbone, seed)
    if recipe.motion_channels:
        motion_init(backbone, recipe.motion_channels)
    ids = {a: tokenizer.convert_tokens_to_ids(REWARD_TOKENS[a]) for a in REWARD_AXES}
    rm_head = nn.Linear(backbone.config.text_config.hidden_size, 1, bias=False)
    model = VideoRewardModel(
        backbone, rm_head, tokenizer, ids, dict.fromkeys(REWARD_AXES, 0.0), dict.fromkeys(REWARD_AXES, 1.0)
    )
    route_init(model, recipe.route)
    if recipe.temporal_gain:
        if probe is None:
            raise ValueError("a recipe with temporal_gain needs a probe video to lay its route out for")
        _, gh, gw = probe.grid_thw
        offset = (gh // MERGE_SIZE) * (gw // MERGE_SIZE)  # merged tokens per temporal patch
        temporal_route_init(model, offset, normed_video_marker(model, probe), gain=recipe.temporal_gain)
    return model


def _write_trained_base(path: Path, backbone: nn.Module) -> None:
    """Overwrite the base's LLM weights (not its embeddings) in ``path/Qwen2-VL-tiny`` with ``backbone``'s."""
    from transformers import Qwen2VLForConditionalGeneration

    base_dir = path / TINY_BASE_NAME
    base = Qwen2VLForConditionalGeneration.from_pretrained(str(base_dir), dtype=torch.float32)
    llm = {
        k: v
        for k, v in backbone.state_dict().items()
        if k.startswith("model.language_model.") and "embed_tokens" not in k
    }
    missing = set(llm) - set(base.state_dict())
    if missing:
        raise RuntimeError(f"trained LLM keys absent from the base: {sorted(missing)[:3]}")
    base.load_state_dict(llm, strict=False)
    base.save_pretrained(str(base_dir))


def train_videoreward(
    path: Path,
    steps: int,
    rubric_steps: int,
    frames: int,
    size: int,
    opts: PreprocessOptions,
    seed: int,
    recipe: RewardRecipe = RewardRecipe(),
) -> tuple[Path, list[float]]:
    """Train the world's VideoReward and write it in the official layout under ``path`` (empty or absent).

    Every weight of the tiny base is trained from the recipe's initialisation (the world has no pretrained Qwen2-VL
    to adapt): ``steps - rubric_steps`` steps on short inputs (video, prompt, reward tokens), then ``rubric_steps`` on
    the full VideoAlign rubric, each step on ``recipe.batch`` videos in minimal-pair groups. The trained LLM is written
    as the layout's base, the ViT, merger, embeddings and ``rm_head`` as the non-LoRA state, and the adapter holds a
    zero update (``B = 0``), so the loader's merge is the identity.

    Returns:
        ``(path, per-step losses)``.
    """
    if not 0 <= rubric_steps <= steps:
        raise ValueError(f"rubric_steps={rubric_steps} must be in [0, steps={steps}]")
    torch.manual_seed(seed)
    train, _ = split_prompts()
    probe = preprocess_frames(labelled_video(train, seed, frames, size).frames, opts) if recipe.temporal_gain else None
    model = build_reward_model(path, seed, recipe, probe)
    backbone = model.backbone
    scorer = BatchedReward(model, "short")
    body = list(backbone.parameters())
    heads = list(model.rm_head.parameters())
    opt = torch.optim.AdamW(
        [{"params": body, "lr": recipe.lr}, {"params": heads, "lr": recipe.head_lr}], weight_decay=0.0, fused=True
    )
    losses = []
    backbone.train()
    for step in progress(range(steps), desc="videoreward (steps)", total=steps):
        if step == steps - rubric_steps:
            scorer.rubric = "full"
        seeds = [seed * 1_000_003 + step * 31 + i for i in range(recipe.batch // GROUP)]
        batch = [ex for s in seeds for ex in scene_group(train, s, frames, size)]
        targets = torch.tensor([[4 * ex.labels[a] - 2 for a in REWARD_AXES] for ex in batch])
        videos, index = distinct_videos(batch, opts)
        scores = scorer(videos, [ex.prompt for ex in batch], index)
        loss = pair_regression_loss(scores, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*body, *heads], 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    backbone.eval()
    with torch.no_grad():
        held = torch.stack([_logits(model, ex, opts).float() for ex in held_out_examples(48, frames, size)])
    means, stds = held.mean(dim=0), held.std(dim=0).clamp_min(1e-3)
    inference = {}
    for i, a in enumerate(REWARD_AXES):
        inference[f"{a}_mean"], inference[f"{a}_std"] = float(means[i]), float(stds[i])
    mods = dict(backbone.named_modules())
    g = torch.Generator().manual_seed(seed)
    lora = {
        n: (
            torch.randn(TINY_LORA_RANK, mods[n].in_features, generator=g) / mods[n].in_features ** 0.5,
            torch.zeros(mods[n].out_features, TINY_LORA_RANK),
        )
        for n in lora_target_names(backbone)
    }
    _write_trained_base(path, backbone)
    save_videoreward_checkpoint(path, backbone, model.rm_head.weight, lora, inference_config=inference)
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


def spearman_ceiling(y: list[float]) -> float:
    """The highest Spearman rho against ``y`` that scores without ties can reach: ``sqrt(1 - sum(t^3 - t) / (n^3 - n))``.

    ``t`` runs over the sizes of the groups of equal labels. A model's scores are almost never exactly equal, so
    with heavily tied labels (most held-out videos score MQ = 1: only jittered ones move) even a perfect ordering of
    the untied part stays below 1.
    """
    n = len(y)
    ties = sum(c**3 - c for c in torch.unique(torch.tensor(y, dtype=torch.float64), return_counts=True)[1].tolist())
    return float((1 - ties / (n**3 - n)) ** 0.5) if n > 1 else float("nan")


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
