"""Tiny real models for the method tests (docs/method.md §6.1): stock Wan transformers wrapped as denoisers."""

from __future__ import annotations

import pytest
import torch

from stream_r1.config.schema import RolloutConfig
from stream_r1.models.causal_wan import CausalWanTransformer
from stream_r1.models.denoiser import BidirectionalDenoiser, CausalDenoiser
from stream_r1.models.tiny import TINY_TEXT_DIM, TINY_TEXT_LEN, build_tiny_transformer

TINY_ROLLOUT = RolloutConfig(num_frames=6, latent_height=4, latent_width=4)


def make_causal(seed: int = 0) -> CausalDenoiser:
    """A tiny causal student with the stock tiny transformer's weights (full cache, chunks of 3)."""
    stock = build_tiny_transformer(seed)
    student = CausalWanTransformer.from_config(stock.config)
    student.load_state_dict(stock.state_dict(), strict=True)
    return CausalDenoiser(student.eval(), shift=5.0, frames_per_block=3)


@pytest.fixture
def causal_student() -> CausalDenoiser:
    return make_causal(0)


@pytest.fixture
def critic() -> BidirectionalDenoiser:
    return BidirectionalDenoiser(build_tiny_transformer(1), shift=5.0)


@pytest.fixture
def teacher() -> BidirectionalDenoiser:
    return BidirectionalDenoiser(build_tiny_transformer(2, teacher=True), shift=5.0)


@pytest.fixture
def text_emb() -> torch.Tensor:
    return torch.randn(1, TINY_TEXT_LEN, TINY_TEXT_DIM, generator=torch.Generator().manual_seed(11))


@pytest.fixture
def negative_emb() -> torch.Tensor:
    return torch.randn(1, TINY_TEXT_LEN, TINY_TEXT_DIM, generator=torch.Generator().manual_seed(12))
