"""Tiny random Wan transformer / VAE / umT5 models and their on-disk writers (docs/method.md §6.1).

Every builder is seeded and leaves the global RNG untouched; nothing here touches a model hub. The files
use the same formats as the real checkpoints so every loading path runs on a CPU-only machine. The whole
tiny set (with the VideoReward model of :mod:`stream_r1.reward.tiny`) is assembled by
``stream-r1 make-tiny-checkpoints`` (``stream_r1.commands.make_tiny_checkpoints``).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from stream_r1.models.loading import export_diffusers, export_original, original_state_dict
from stream_r1.utils.io import atomic_write_bytes

M = TypeVar("M")

# §6.1: student/critic ~41k params; text_dim equals the tiny umT5 d_model.
TINY_TEXT_DIM = 32
TINY_STUDENT: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": TINY_TEXT_DIM,
    "freq_dim": 32,
    "ffn_dim": 64,
    "num_layers": 2,
    "cross_attn_norm": True,
    "rope_max_seq_len": 64,
}
# A wider, deeper teacher keeps "teacher differs from student" code paths honest.
TINY_TEACHER: dict[str, Any] = {**TINY_STUDENT, "num_attention_heads": 3, "num_layers": 3}
TINY_VAE: dict[str, Any] = {
    "base_dim": 4,
    "z_dim": 16,
    "dim_mult": [1, 1, 1, 1],
    "num_res_blocks": 1,
    "temperal_downsample": [False, True, True],
}
TINY_UMT5: dict[str, Any] = {
    "d_model": TINY_TEXT_DIM,
    "num_layers": 2,
    "num_heads": 2,
    "d_kv": 16,
    "d_ff": 64,
    "feed_forward_proj": "gated-gelu",
    "relative_attention_num_buckets": 8,
    "relative_attention_max_distance": 16,
    "dropout_rate": 0.0,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
    "is_encoder_decoder": False,
}
TINY_TEXT_LEN = 16

# Special tokens at umT5's ids (pad 0, eos 1, unk 2), then a small English vocabulary.
_SPECIALS = ("<pad>", "</s>", "<unk>")
_WORDS_TEXT = (
    "a an the of in on at to with and over under through down up into from by near across along while "
    "red blue green yellow white black golden silver orange purple pink brown gray dark bright fresh old young "
    "fox cat dog bird horse fish boat car train city street forest river ocean sea mountain ridge sky cloud "
    "clouds snow rain sun moon light lighting night dawn sunset morning water fire tree trees flower field "
    "paper wooden floor ball yarn man woman child people crowd face hand robot dragon castle bridge road "
    "walking running trotting flying drifting rolling dancing swimming jumping falling batting playing sitting "
    "cinematic close-up timelapse slow motion aerial view shot camera pan zoom style realistic detailed "
    "beautiful small large tall soft calm stormy rain-soaked , . ! ?"
)
_WORDS = tuple(_WORDS_TEXT.split())


def _seeded(seed: int, build: Callable[[], M]) -> M:
    """Run ``build`` under a forked, seeded global RNG (library inits draw from it) and restore it after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def build_tiny_transformer(seed: int, *, teacher: bool = False) -> WanTransformer3DModel:
    """A tiny random stock ``WanTransformer3DModel`` (student/critic config, or the teacher's)."""
    cfg = TINY_TEACHER if teacher else TINY_STUDENT
    return _seeded(seed, lambda: WanTransformer3DModel(**cfg)).eval()


def build_tiny_vae(seed: int) -> AutoencoderKLWan:
    """A tiny random ``AutoencoderKLWan`` (compression 4x8x8, z_dim 16, Wan2.1 latent mean/std)."""
    return _seeded(seed, lambda: AutoencoderKLWan(**TINY_VAE)).eval()


def build_tiny_tokenizer(words: tuple[str, ...] = _WORDS) -> PreTrainedTokenizerFast:
    """A lower-casing WordLevel tokenizer over ``words`` built in memory; appends ``</s>`` like umT5."""
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys((*_SPECIALS, *words)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=TINY_TEXT_LEN
    )


def build_tiny_text_encoder(seed: int, vocab_size: int) -> UMT5EncoderModel:
    """A tiny random ``UMT5EncoderModel`` (d_model 32 = the tiny transformer's text_dim)."""
    return _seeded(seed, lambda: UMT5EncoderModel(UMT5Config(vocab_size=vocab_size, **TINY_UMT5))).eval()


def write_tiny_models(root: str | Path, seed: int = 0) -> list[Path]:
    """Write every tiny model part except VideoReward under ``root`` (layout of docs/design.md).

    Writes ``base/`` (diffusers), ``base_original/`` (original Wan format, same weights), ``teacher/``,
    ``ode_init.pt`` (Self-Forcing ``{"generator": {"model.<original key>": tensor}}``), ``vae/``,
    ``text_encoder/`` and ``tokenizer/``.

    Returns:
        The paths written (directories and files).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = build_tiny_transformer(seed)
    export_diffusers(base, root / "base")
    export_original(base, root / "base_original")
    export_diffusers(build_tiny_transformer(seed + 1, teacher=True), root / "teacher")
    # The ODE-initialised student differs from the base weights, as the real ode_init.pt does.
    student = build_tiny_transformer(seed + 2)
    ode = {"generator": original_state_dict(student, prefix="model.")}
    buf = io.BytesIO()  # saving to a buffer keeps the archive name (and so the bytes) independent of temp names
    torch.save(ode, buf)
    atomic_write_bytes(root / "ode_init.pt", buf.getvalue())
    build_tiny_vae(seed + 3).save_pretrained(str(root / "vae"), safe_serialization=True)
    tokenizer = build_tiny_tokenizer()
    tokenizer.save_pretrained(str(root / "tokenizer"))
    encoder = build_tiny_text_encoder(seed + 4, vocab_size=len(tokenizer))
    encoder.save_pretrained(str(root / "text_encoder"))
    return [root / n for n in ("base", "base_original", "teacher", "ode_init.pt", "vae", "text_encoder", "tokenizer")]
