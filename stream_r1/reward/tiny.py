"""A tiny VideoReward written in exactly the official checkpoint layout (docs/method.md §6.1).

Used by ``stream-r1 make-tiny-checkpoints`` and the tests: a tiny random Qwen2-VL base with an
in-memory word-level tokenizer, plus a "trained" VideoReward on top of it (non-zero LoRA on every
LLM linear, tuned ViT / embeddings / rm_head in the old transformers-4.45 + peft key names, and a
``model_config.json`` like the released one). Nothing is downloaded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import torch

from stream_r1.reward.prompt import REWARD_AXES, REWARD_TOKENS, RUBRIC, SYSTEM_PROMPT, TEMPLATE_NAME

TINY_BASE_NAME = "Qwen2-VL-tiny"
"""Base model directory inside the tiny VideoReward directory (``model_name_or_path`` basename)."""
TINY_STEP = 1
TINY_LORA_RANK = 4
TINY_LORA_ALPHA = 8
TINY_BASE_VOCAB = 512
"""Embedding rows of the tiny base (larger than the tokenizer, so loading resizes it like the real one)."""
TINY_INFERENCE_CONFIG: dict[str, float] = {
    "VQ_mean": 0.25,
    "VQ_std": 1.5,
    "MQ_mean": -0.5,
    "MQ_std": 0.75,
    "TA_mean": 1.0,
    "TA_std": 2.0,
}
"""Per-axis logit means/stds of the tiny model (distinct values so z-normalisation is visible)."""
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
_LORA_TARGETS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


def _tiny_tokenizer(extra_words: tuple[str, ...] = ()) -> object:
    """Word-level tokenizer over the rubric's words (plus ``extra_words``, e.g. a prompt vocabulary) and
    the Qwen special tokens (no reward tokens: those are added at load time, as VideoAlign does)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    text = RUBRIC + SYSTEM_PROMPT + " system user assistant " + " ".join(extra_words)
    words = sorted(set(re.findall(r"\w+|[^\w\s]+", text)))
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(list(QWEN_SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="<|endoftext|>", eos_token="<|im_end|>"
    )


def tiny_qwen2vl_config(token_ids: dict[str, int], vocab_size: int = TINY_BASE_VOCAB) -> object:
    """The tiny Qwen2VLConfig of docs/method.md §6.1 (text hidden 32, 2 layers; ViT depth 2, embed 32)."""
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        text_config={
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "intermediate_size": 64,
            "vocab_size": vocab_size,
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1.0e6, "mrope_section": [2, 3, 3]},
            "bos_token_id": None,
            "eos_token_id": token_ids["<|im_end|>"],
            "pad_token_id": None,
        },
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 32,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "temporal_patch_size": 2,
            "spatial_merge_size": 2,
        },
        image_token_id=token_ids["<|image_pad|>"],
        video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"],
        vision_end_token_id=token_ids["<|vision_end|>"],
    )


def _old_key(v5_key: str) -> str:
    """transformers v5 name -> the 4.45 + peft name VideoAlign saved (inverse of the loader's remap)."""
    if v5_key.startswith("model.visual."):
        return "base_model.model." + v5_key.removeprefix("model.")
    if v5_key.startswith("model.language_model."):
        return "base_model.model.model." + v5_key.removeprefix("model.language_model.")
    return "base_model.model." + v5_key


def _model_config(lora_rank: int, lora_alpha: int) -> dict[str, object]:
    return {
        "data_config": {
            "meta_data": "train.csv",
            "data_dir": "videos",
            "eval_dim": list(REWARD_AXES),
            "prompt_template_type": TEMPLATE_NAME,
            "fps": 2.0,
            "num_frames": None,
            "max_frame_pixels": 200704,
            "sample_type": "uniform",
        },
        "model_config": {
            "model_name_or_path": f"tiny/{TINY_BASE_NAME}",
            "output_dim": 1,
            "use_special_tokens": True,
            "reward_token": "special",
            "loss_type": "btt",
            "freeze_vision_tower": False,
            "tune_merger": True,
        },
        "peft_lora_config": {
            "lora_enable": True,
            "vision_lora": False,
            "lora_r": lora_rank,
            "lora_alpha": lora_alpha,
            "lora_dropout": 0.05,
            "lora_namespan_exclude": ["lm_head", "rm_head", "embed_tokens", "visual"],
            "lora_task_type": "CAUSAL_LM",
            "use_rslora": False,
            "num_lora_modules": -1,
        },
        "inference_config": dict(TINY_INFERENCE_CONFIG),
    }


def write_tiny_base(
    path: Path,
    *,
    seed: int = 0,
    extra_words: tuple[str, ...] = (),
    base_config: Callable[[dict[str, int]], object] | None = None,
) -> tuple[object, object]:
    """Write the random tiny Qwen2-VL base (weights + tokenizer) into ``path/Qwen2-VL-tiny``.

    ``base_config`` builds the ``Qwen2VLConfig`` from the special-token ids (default: the tiny one);
    ``extra_words`` extend the tokenizer's vocabulary (e.g. a prompt grammar's words).

    Returns:
        ``(model, tokenizer)`` ready to be trained as VideoAlign does: the three reward tokens added to
        the tokenizer and the embeddings resized (the saved base stays without them).
    """
    from transformers import Qwen2VLForConditionalGeneration

    tokenizer = _tiny_tokenizer(extra_words)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        base = Qwen2VLForConditionalGeneration((base_config or tiny_qwen2vl_config)(ids)).eval()
    base_dir = Path(path) / TINY_BASE_NAME
    base.save_pretrained(str(base_dir))
    tokenizer.save_pretrained(str(base_dir))
    tokenizer.add_special_tokens({"additional_special_tokens": [REWARD_TOKENS[a] for a in REWARD_AXES]})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        base.resize_token_embeddings(len(tokenizer))
    return base, tokenizer


def lora_target_names(model: torch.nn.Module) -> list[str]:
    """Names (transformers v5) of the LLM linears VideoAlign adapts with LoRA."""
    return [
        n
        for n, _ in model.named_modules()
        if n.startswith("model.language_model.layers.") and n.endswith(_LORA_TARGETS)
    ]


def save_videoreward_checkpoint(
    path: Path,
    model: torch.nn.Module,
    rm_head_weight: torch.Tensor,
    lora: dict[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    lora_rank: int = TINY_LORA_RANK,
    lora_alpha: int = TINY_LORA_ALPHA,
    inference_config: dict[str, float] | None = None,
    step: int = TINY_STEP,
) -> Path:
    """Write the trained parts of a VideoReward next to its base, in the official layout.

    Args:
        path: VideoReward directory holding the base (``write_tiny_base``).
        model: The Qwen2-VL whose ViT, merger and token embeddings were tuned (saved as non-LoRA state).
        rm_head_weight: ``[output_dim, hidden]``.
        lora: ``{v5 module name: (A [r, in], B [out, r])}`` for every adapted linear.
        lora_rank, lora_alpha: LoRA geometry written to ``model_config.json`` (merge scale alpha / r).
        inference_config: Per-axis logit means/stds (default: the tiny ones).
        step: The ``checkpoint-<step>`` number.
    """
    from safetensors.torch import save_file

    path = Path(path)
    non_lora: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        if name.startswith("model.visual.") or name == "model.language_model.embed_tokens.weight":
            non_lora[_old_key(name)] = p.detach().clone()
    non_lora["base_model.model.rm_head.weight"] = rm_head_weight.detach().clone()
    adapter: dict[str, torch.Tensor] = {}
    for name, (a, b) in lora.items():
        stem = _old_key(name)
        adapter[f"{stem}.lora_A.weight"] = a.detach()
        adapter[f"{stem}.lora_B.weight"] = b.detach()
    ckpt = path / f"checkpoint-{step}"
    ckpt.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in adapter.items()}, str(ckpt / "adapter_model.safetensors"))
    torch.save({k: v.contiguous() for k, v in non_lora.items()}, ckpt / "non_lora_state_dict.pth")
    cfg = _model_config(lora_rank, lora_alpha)
    if inference_config is not None:
        cfg["inference_config"] = dict(inference_config)
    (path / "model_config.json").write_text(json.dumps(cfg, indent=4) + "\n", encoding="utf-8")
    return path


def write_tiny_videoreward(
    path: Path, *, seed: int = 0, base_config: Callable[[dict[str, int]], object] | None = None
) -> Path:
    """Write a tiny VideoReward in the official layout under ``path`` (created; must not exist or be empty).

    Layout: ``path/model_config.json``, ``path/checkpoint-1/{adapter_model.safetensors,
    non_lora_state_dict.pth}``, ``path/Qwen2-VL-tiny/`` (base model + tokenizer).

    Args:
        path: Target directory.
        seed: Seed of all random weights (same seed -> identical files).
        base_config: Builds the base ``Qwen2VLConfig`` from the tokenizer's special-token ids (default: the
            tiny one); a larger geometry (e.g. Qwen2-VL-2B's, for GPU memory checks) in the same layout.

    Returns:
        ``path``.

    Raises:
        ValueError: ``path`` exists and is not an empty directory.
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(f"{path} exists and is not an empty directory; choose a new path or remove it")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        base, _ = write_tiny_base(path, seed=seed, base_config=base_config)
        # "Training" as VideoAlign does it: tune non-LoRA parts, add LoRA.
        with torch.no_grad():
            for name, p in base.named_parameters():
                if name.startswith("model.visual.") or name == "model.language_model.embed_tokens.weight":
                    p.add_(0.01 * torch.randn_like(p))
        hidden = base.config.text_config.hidden_size
        rm_head = torch.randn(1, hidden) / hidden**0.5
        mods = dict(base.named_modules())
        lora = {
            n: (
                0.1 * torch.randn(TINY_LORA_RANK, mods[n].in_features),
                0.1 * torch.randn(mods[n].out_features, TINY_LORA_RANK),
            )
            for n in lora_target_names(base)
        }
    return save_videoreward_checkpoint(path, base, rm_head, lora)
