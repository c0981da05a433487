"""umT5 text encoder as Wan uses it: whitespace cleaning, pad to max length, zero past the true length (docs/method.md §4.3).

Wan attends all ``max_length`` tokens in cross-attention with no text mask (§5 item 21), so the padded
positions must be exact zeros rather than whatever the encoder emits there.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, UMT5EncoderModel

from stream_r1.utils.logging import get_logger

logger = get_logger(__name__)

_WS = re.compile(r"\s+")


def clean_prompt(text: str) -> str:
    """Wan's ``whitespace_clean(basic_clean(text))`` without ftfy: unescape HTML twice, collapse whitespace."""
    text = html.unescape(html.unescape(text)).strip()
    return _WS.sub(" ", text).strip()


class TextEncoder:
    """Tokenizer + ``UMT5EncoderModel``; :meth:`encode` returns zero-padded ``[B, max_length, D]`` embeddings.

    Args:
        model: The umT5 encoder.
        tokenizer: Its tokenizer (fast or slow).
        max_length: Tokens per prompt (512 for Wan, 16 in the tiny config).
    """

    def __init__(self, model: UMT5EncoderModel, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        if max_length < 1:
            raise ValueError(f"max_length={max_length} must be >= 1 (Wan uses 512)")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def from_pretrained(
        cls,
        encoder_dir: str | Path,
        tokenizer_dir: str | Path,
        max_length: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> TextEncoder:
        """Load a local ``UMT5EncoderModel`` directory and tokenizer directory (no hub access).

        Raises:
            FileNotFoundError: a directory is missing.
        """
        for what, d in (("text encoder", encoder_dir), ("tokenizer", tokenizer_dir)):
            if not Path(d).is_dir():
                raise FileNotFoundError(f"{what} directory {d} does not exist")
        model = UMT5EncoderModel.from_pretrained(str(encoder_dir), dtype=dtype, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        return cls(model.to(device), tokenizer, max_length)

    @property
    def dim(self) -> int:
        """Embedding width D (4096 for umT5-XXL)."""
        return int(self.model.config.d_model)

    @property
    def device(self) -> torch.device:
        """Device of the encoder."""
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Embed prompts.

        Args:
            prompts: B prompt strings.

        Returns:
            ``[B, max_length, D]`` in the encoder dtype; rows past each prompt's token count are zero.

        Raises:
            TypeError: ``prompts`` is not a list of strings.
        """
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError(f"prompts must be a list of str; got {type(prompts).__name__}")
        tok = self.tokenizer(
            [clean_prompt(p) for p in prompts],
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        ids = tok["input_ids"].to(self.device)
        mask = tok["attention_mask"].to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return hidden.masked_fill(~mask.bool().unsqueeze(-1), 0.0)
