"""Prompt data: a prompt file, a resumable distributed sampler, and an on-disk text-embedding cache.

Data-free DMD trains on prompts only (docs/method.md §1.8). The sampler shuffles with ``seed + epoch``
and drops the tail so every rank sees the same number of prompts (``DistributedSampler`` with
``drop_last``). Embeddings are cached per prompt under ``sha256(encoder identity + prompt)`` and
written atomically, so the umT5-XXL encoder runs once per prompt per run directory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from stream_r1.utils.io import atomic_write, read_prompt_file


def read_prompts(path: str | Path) -> list[str]:
    """Prompts of a file, one per line (errors name ``data.prompts``; see :func:`read_prompt_file`)."""
    return read_prompt_file(path, setting="data.prompts")


@dataclass
class PromptSampler:
    """Infinite, resumable distributed sampler over prompt indices.

    Each epoch is a permutation seeded by ``seed + epoch`` (identity order when ``shuffle`` is
    off), truncated to a multiple of ``world_size * batch_size`` (drop_last); rank ``r`` takes
    every ``world_size``-th index starting at ``r``.

    Attributes:
        num_prompts: Size of the prompt list.
        world_size: Number of ranks.
        rank: This rank.
        batch_size: Prompts per rank per draw.
        seed: Base seed.
        shuffle: Shuffle each epoch.
        epoch: Current epoch (state).
        position: Draws taken in the current epoch (state).
    """

    num_prompts: int
    world_size: int
    rank: int
    batch_size: int
    seed: int
    shuffle: bool = True
    epoch: int = 0
    position: int = 0

    def __post_init__(self) -> None:
        need = self.world_size * self.batch_size
        if self.num_prompts < need:
            raise ValueError(
                f"{self.num_prompts} prompts cannot fill one batch of {self.batch_size} per rank on "
                f"{self.world_size} ranks (need >= {need}); add prompts or lower train.global_batch_size"
            )

    @property
    def draws_per_epoch(self) -> int:
        """Batches each rank draws per epoch."""
        return self.num_prompts // (self.world_size * self.batch_size)

    def _epoch_order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_prompts))
        rng = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.num_prompts, generator=rng).tolist()

    def next_indices(self) -> list[int]:
        """This rank's next ``batch_size`` prompt indices (advances the state)."""
        if self.position >= self.draws_per_epoch:
            self.epoch += 1
            self.position = 0
        order = self._epoch_order()[: self.draws_per_epoch * self.world_size * self.batch_size]
        mine = order[self.rank :: self.world_size]
        start = self.position * self.batch_size
        self.position += 1
        return mine[start : start + self.batch_size]

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "position"}``."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore :meth:`state_dict`."""
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


class TextEmbeddingCache:
    """Per-prompt text embeddings on disk, computed on a miss by ``encode``.

    Args:
        directory: Cache folder (created on demand).
        encoder_identity: A string that changes whenever the encoder or its settings change
            (checkpoint path and hash, max length).
        encode: ``list[str] -> Tensor [B, L, D]``; called only for prompts not on disk (lazy, so
            the encoder is not even loaded when every prompt is cached).
    """

    def __init__(self, directory: str | Path, encoder_identity: str, encode: Callable[[list[str]], torch.Tensor]) -> None:
        self.directory = Path(directory)
        self.encoder_identity = encoder_identity
        self._encode = encode
        self.hits = 0
        self.misses = 0

    def key(self, prompt: str) -> str:
        """sha256 hex of the encoder identity and the prompt."""
        return hashlib.sha256(f"{self.encoder_identity}\x00{prompt}".encode()).hexdigest()

    def _path(self, prompt: str) -> Path:
        k = self.key(prompt)
        return self.directory / k[:2] / f"{k}.safetensors"

    def get(self, prompts: list[str]) -> torch.Tensor:
        """Embeddings ``[B, L, D]`` of ``prompts`` (cached ones from disk, the rest encoded and stored)."""
        out: list[torch.Tensor | None] = []
        missing: list[int] = []
        for i, p in enumerate(prompts):
            path = self._path(p)
            if path.is_file():
                out.append(load_file(path)["embedding"])
                self.hits += 1
            else:
                out.append(None)
                missing.append(i)
        if missing:
            self.misses += len(missing)
            fresh = self._encode([prompts[i] for i in missing]).detach().to("cpu").contiguous()
            for j, i in enumerate(missing):
                emb = fresh[j].clone()
                out[i] = emb
                atomic_write(self._path(prompts[i]), lambda tmp, e=emb: save_file({"embedding": e}, str(tmp)))
        return torch.stack([e for e in out if e is not None])
