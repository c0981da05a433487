"""VideoReward: Qwen2-VL (transformers v5) + ``rm_head`` at three special tokens, 1-D positions.

docs/method.md §2.2 and §4.5: VideoAlign builds ``inputs_embeds`` itself (token embeddings with the
merged ViT features scattered into the ``<|video_pad|>`` slots) and calls the text decoder with
plain 1-D positions replicated on the three M-RoPE axes; v5's default forward would apply 3-D
M-RoPE, which VideoReward never saw. So this module runs the pieces itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from stream_r1.reward.loading import load_video_reward
from stream_r1.reward.preprocess import PreprocessOptions, patchify, preprocess_frames
from stream_r1.reward.prompt import REWARD_AXES, build_chat_text
from stream_r1.reward.saliency import compute_saliency

SaliencySpace = Literal["pixel", "patch_reference", "embeds"]
PatchOrder = Literal["fixed", "sr1_naive"]


@dataclass(slots=True)
class RewardScores:
    """One video's VideoReward output.

    Attributes:
        logits: Raw rm_head outputs per axis (VQ, MQ, TA).
        z: z-normalised rewards ``(logit - mean) / std`` per axis.
        saliency: Per-axis saliency (empty for :meth:`VideoRewardModel.score`): ``[T', Hr, Wr]`` for
            ``pixel``, ``[t, h, w]`` 14x14-patch grid for ``patch_reference``, ``[t, h/2, w/2]`` for ``embeds``.
        space: The saliency space used ("" when none).
        frame_indices: Input frames that were scored (T' of them).
        grid_thw: ViT grid ``(T'/2, Hr/14, Wr/14)``.
    """

    logits: dict[str, float]
    z: dict[str, float]
    saliency: dict[str, torch.Tensor] = field(default_factory=dict)
    space: str = ""
    frame_indices: tuple[int, ...] = ()
    grid_thw: tuple[int, int, int] = (0, 0, 0)

    @property
    def overall(self) -> float:
        """Mean of the three z-rewards (VideoAlign/SR1 ``Overall``)."""
        return sum(self.z[a] for a in REWARD_AXES) / len(REWARD_AXES)


class VideoRewardModel(torch.nn.Module):
    """Frozen VideoReward scorer.

    Args:
        backbone: ``Qwen2VLForConditionalGeneration`` with merged weights.
        rm_head: ``Linear(hidden -> output_dim, bias=False)``.
        tokenizer: Tokenizer containing the three reward tokens.
        reward_token_ids: ``{axis: id}``.
        means: Per-axis logit means (``inference_config``).
        stds: Per-axis logit stds.
    """

    def __init__(
        self,
        backbone: Any,
        rm_head: torch.nn.Linear,
        tokenizer: Any,
        reward_token_ids: dict[str, int],
        means: dict[str, float],
        stds: dict[str, float],
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.rm_head = rm_head
        self.tokenizer = tokenizer
        self.reward_token_ids = dict(reward_token_ids)
        self.means = dict(means)
        self.stds = dict(stds)
        self.video_token_id = int(backbone.config.video_token_id)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        *,
        base_dir: str | Path | None = None,
        gradient_checkpointing: bool | None = None,
    ) -> VideoRewardModel:
        """Load the official VideoReward layout (see :mod:`stream_r1.reward.loading`).

        Args:
            path: VideoReward directory.
            dtype: Parameter dtype (bfloat16 on GPU).
            device: Target device.
            base_dir: Base Qwen2-VL directory (default: found from ``model_config.json``).
            gradient_checkpointing: Checkpoint ViT/LLM blocks for the saliency passes; None = on for CUDA
                devices (the 80-frame ViT activations do not fit otherwise, docs/method.md §6.2), off elsewhere.
        """
        parts = load_video_reward(path, dtype=dtype, device=device, base_dir=base_dir)
        model = cls(
            parts.backbone,
            parts.rm_head,
            parts.tokenizer,
            parts.reward_token_ids,
            parts.layout.means,
            parts.layout.stds,
        )
        if gradient_checkpointing is None:
            gradient_checkpointing = torch.device(device).type == "cuda"
        if gradient_checkpointing:
            model.enable_gradient_checkpointing()
        return model

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return self.rm_head.weight.device

    def enable_gradient_checkpointing(self) -> None:
        """Checkpoint ViT and LLM blocks during saliency backward passes (GPU memory, docs/method.md §3.4).

        transformers only checkpoints in training mode; Qwen2-VL has no dropout, so training mode
        computes exactly the same function.
        """
        self.backbone.activation_checkpointing_enable({"use_reentrant": False})
        self.backbone.train()

    # ----------------------------------------------------------------------------- token side
    def encode_prompt(self, prompt: str, num_video_tokens: int) -> torch.Tensor:
        """Chat-template token ids ``[1, L]`` with ``num_video_tokens`` video placeholders.

        Raises:
            ValueError: The tokenised text does not hold exactly ``num_video_tokens`` video tokens, or
                not exactly one of each reward token.
        """
        text = build_chat_text(prompt, num_video_tokens)
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(self.device)
        found = int((ids == self.video_token_id).sum())
        if found != num_video_tokens:
            raise ValueError(f"tokenised prompt holds {found} <|video_pad|> tokens, expected {num_video_tokens}")
        self.reward_positions(ids)
        return ids

    def reward_positions(self, input_ids: torch.Tensor) -> list[int]:
        """Sequence positions of the VQ, MQ and TA reward tokens in ``input_ids [B, L]``.

        Raises:
            ValueError: ``input_ids`` is not 2-D, a reward token does not occur exactly once in a row, or the rows
                hold them at different positions (a batch must share one template).
        """
        if input_ids.ndim != 2 or input_ids.shape[0] < 1:
            raise ValueError(f"input_ids must be [B, L], got {tuple(input_ids.shape)}")
        positions = []
        for axis in REWARD_AXES:
            hits = input_ids == self.reward_token_ids[axis]
            counts = hits.sum(dim=1).tolist()
            if any(c != 1 for c in counts):
                bad = next(c for c in counts if c != 1)
                raise ValueError(
                    f"reward token for {axis} (id {self.reward_token_ids[axis]}) occurs {bad} times in the "
                    "input; it must occur exactly once (build the text with stream_r1.reward.prompt)"
                )
            cols = hits.int().argmax(dim=1).tolist()
            if len(set(cols)) != 1:
                raise ValueError(f"the rows hold the {axis} reward token at different positions {sorted(set(cols))}")
            positions.append(cols[0])
        return positions

    # ------------------------------------------------------------------------------ forward
    def embed_video(self, pixel_values_videos: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """ViT + merger: ``[N, 1176]`` patches -> ``[N/4, D]`` merged video tokens."""
        visual = self.backbone.model.visual
        return visual(pixel_values_videos.to(visual.dtype), grid_thw=grid_thw).pooler_output

    def logits_from_embeds(self, video_embeds: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Scatter video tokens, run the text decoder with 1-D positions, read rm_head at the reward tokens.

        Args:
            video_embeds: ``[M, D]`` merged ViT features (M = number of ``<|video_pad|>`` tokens).
            input_ids: ``[1, L]``.

        Returns:
            Raw logits ``[3]`` in (VQ, MQ, TA) order (dtype of the model).

        Raises:
            ValueError: Not one row, token count mismatch or bad reward tokens.
        """
        if input_ids.ndim != 2 or input_ids.shape[0] != 1:
            raise ValueError(f"input_ids must be [1, L], got {tuple(input_ids.shape)} (batch_logits_from_embeds takes B)")
        return self.batch_logits_from_embeds(video_embeds, input_ids)[0]

    def batch_logits_from_embeds(self, video_embeds: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """:meth:`logits_from_embeds` of ``B`` rows in one decoder pass (each row as it would score alone).

        Args:
            video_embeds: ``[M, D]`` merged ViT features of every row's video, in row order (M = number of
                ``<|video_pad|>`` tokens in ``input_ids``).
            input_ids: ``[B, L]`` rows of one template: the reward tokens at the same positions in every row.

        Returns:
            Raw logits ``[B, 3]`` in (VQ, MQ, TA) order (dtype of the model).

        Raises:
            ValueError: Token count mismatch or bad reward tokens.
        """
        positions = self.reward_positions(input_ids)
        embeds = self.backbone.get_input_embeddings()(input_ids)
        mask = (input_ids == self.video_token_id).unsqueeze(-1)
        if int(mask.sum()) != video_embeds.shape[0]:
            raise ValueError(f"{int(mask.sum())} <|video_pad|> tokens but {video_embeds.shape[0]} video features")
        embeds = embeds.masked_scatter(mask.expand_as(embeds), video_embeds.to(embeds.dtype))
        rows, seq = input_ids.shape
        # 1-D positions replicated on the three M-RoPE axes: what VideoAlign's position_ids=None meant in 4.45.
        pos = torch.arange(seq, device=input_ids.device).view(1, 1, seq).expand(3, rows, seq)
        out = self.backbone.model.language_model(inputs_embeds=embeds, position_ids=pos, use_cache=False)
        head = self.rm_head(out.last_hidden_state[:, positions])  # [B, 3, output_dim]
        return head[..., 0] if head.shape[-1] == 1 else head.diagonal(dim1=-2, dim2=-1)

    def forward(
        self, pixel_values_videos: torch.Tensor, grid_thw: torch.Tensor, input_ids: torch.Tensor
    ) -> torch.Tensor:
        """Raw logits ``[3]`` (VQ, MQ, TA) for one video."""
        return self.logits_from_embeds(self.embed_video(pixel_values_videos, grid_thw), input_ids)

    def normalise(self, logits: dict[str, float]) -> dict[str, float]:
        """z-rewards ``(logit - mean_a) / std_a`` (VideoAlign ``use_norm=True``)."""
        return {a: (float(logits[a]) - self.means[a]) / self.stds[a] for a in logits}

    # ------------------------------------------------------------------------------- public
    @torch.no_grad()
    def score(self, frames: torch.Tensor, prompt: str, opts: PreprocessOptions | None = None) -> RewardScores:
        """Scores of one decoded video without gradients.

        Args:
            frames: ``[T, 3, H, W]`` in [-1, 1].
            prompt: The generation prompt.
            opts: Preprocessing options (default: SR1 recipe).
        """
        video = preprocess_frames(frames.to(self.device), opts)
        ids = self.encode_prompt(prompt, video.num_video_tokens)
        raw = self(patchify(video.x), video.grid_tensor(), ids).float()
        logits = {a: float(raw[i]) for i, a in enumerate(REWARD_AXES)}
        return RewardScores(logits, self.normalise(logits), frame_indices=video.frame_indices, grid_thw=video.grid_thw)

    def score_with_saliency(
        self,
        frames: torch.Tensor,
        prompt: str,
        metrics: tuple[str, ...] = ("MQ", "VQ", "TA"),
        space: SaliencySpace = "pixel",
        patch_order: PatchOrder = "fixed",
        opts: PreprocessOptions | None = None,
        *,
        batched: bool = True,
    ) -> RewardScores:
        """Scores and per-axis saliency from one grad-enabled forward (docs/method.md §3.3-B/C).

        Args:
            frames: ``[T, 3, H, W]`` in [-1, 1] (detached inside: nothing upstream receives gradients).
            prompt: The generation prompt.
            metrics: Axes whose raw-logit gradients are taken, in this order.
            space: ``pixel`` | ``patch_reference`` | ``embeds``.
            patch_order: Row order used by ``patch_reference`` (``fixed`` or SR1's ``sr1_naive``).
            opts: Preprocessing options.
            batched: every axis' gradient from one batched backward (else one backward per axis, as SR1).

        Returns:
            :class:`RewardScores` with ``saliency`` filled (float32, detached).
        """
        video = preprocess_frames(frames.detach().to(self.device), opts)
        ids = self.encode_prompt(prompt, video.num_video_tokens)
        raw, sal = compute_saliency(
            self, video, ids, metrics=metrics, space=space, patch_order=patch_order, batched=batched
        )
        logits = {a: float(raw[i]) for i, a in enumerate(REWARD_AXES)}
        return RewardScores(logits, self.normalise(logits), sal, space, video.frame_indices, video.grid_thw)
