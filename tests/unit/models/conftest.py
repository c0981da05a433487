"""Tiny Wan fixtures (docs/method.md §6.1) shared by the causal-student tests."""

from __future__ import annotations

import pytest
import torch
from diffusers import WanTransformer3DModel

from stream_r1.models.causal_wan import CausalWanTransformer
from stream_r1.models.tiny import TINY_STUDENT

TINY_WAN = TINY_STUDENT  # docs/method.md §6.1, the same tiny student make-tiny-checkpoints writes
LATENT_HW = (8, 8)  # 4x4 = 16 tokens per latent frame
TEXT_LEN = 7


@pytest.fixture()
def stock_wan() -> WanTransformer3DModel:
    """A stock diffusers Wan transformer with random (seeded) weights, eval mode, fp32."""
    torch.manual_seed(0)
    return WanTransformer3DModel(**TINY_WAN).eval()


@pytest.fixture()
def causal_wan(stock_wan: WanTransformer3DModel) -> CausalWanTransformer:
    """The causal student holding exactly the stock model's weights."""
    model = CausalWanTransformer(**TINY_WAN).eval()
    model.load_state_dict(stock_wan.state_dict(), strict=True)
    return model


@pytest.fixture()
def text_emb() -> torch.Tensor:
    """Random text embeddings ``[1, TEXT_LEN, 32]``."""
    return torch.randn(1, TEXT_LEN, 32, generator=torch.Generator().manual_seed(1))
