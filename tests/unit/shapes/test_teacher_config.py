"""The shapes teacher's width must exceed what one latent token carries (docs/benchmarks.md "Shapes world")."""

from __future__ import annotations

import pytest
from diffusers import WanTransformer3DModel

from stream_r1.shapes.sizes import SIZES
from stream_r1.shapes.teacher import teacher_config, token_input_dim


def test_token_input_dim_is_the_patch_embeddings_fan_in() -> None:
    net = WanTransformer3DModel(**teacher_config(128, 1, 32))
    assert token_input_dim() == net.patch_embedding.weight[0].numel() == 64
    assert net.proj_out.out_features == token_input_dim()


@pytest.mark.parametrize("dim", [32, 64, 100])
def test_a_teacher_no_wider_than_its_token_is_refused_with_the_fix(dim: int) -> None:
    with pytest.raises(ValueError, match=rf"teacher dim {dim} must be .* above the 64 numbers .* use e\.g\. 128"):
        teacher_config(dim, 2, 32)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_every_world_size_builds_a_teacher_wider_than_its_token(name: str) -> None:
    ws = SIZES[name]
    cfg = teacher_config(ws.teacher_dim, ws.teacher_layers, 32)
    assert cfg["num_attention_heads"] * cfg["attention_head_dim"] == ws.teacher_dim > token_input_dim()


def test_a_finer_patch_carries_fewer_numbers_per_token_and_lowers_the_floor() -> None:
    net = WanTransformer3DModel(**teacher_config(64, 1, 32, patch_size=(1, 1, 1)))
    assert token_input_dim((1, 1, 1)) == net.patch_embedding.weight[0].numel() == 16
    with pytest.raises(ValueError, match=r"above the 16 numbers .* use e\.g\. 64"):
        teacher_config(16, 1, 32, patch_size=(1, 1, 1))
