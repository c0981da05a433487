"""The shapes teacher's width must exceed what one latent token carries (docs/benchmarks.md "Shapes world")."""

from __future__ import annotations

import pytest
import torch
from diffusers import WanTransformer3DModel

from stream_r1.shapes.sizes import SIZES
from stream_r1.shapes.teacher import (
    ORDER_DIRECTIONS,
    teacher_config,
    token_input_dim,
    train_teacher,
    train_world_teacher,
)


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


def test_train_teacher_continues_a_given_network_with_a_fresh_schedule() -> None:
    cfg = teacher_config(128, 1, 8)
    lat, text, neg = torch.randn(4, 2, 16, 2, 2), torch.randn(4, 3, 8), torch.zeros(1, 3, 8)
    first, _ = train_teacher(lat, text, neg, cfg, 2, 2, seed=0)
    before = {k: v.clone() for k, v in first.state_dict().items()}
    again, losses = train_teacher(lat, text, neg, cfg, 2, 2, seed=1, init=first)
    assert again is first and len(losses) == 2
    assert any(not torch.equal(before[k], v) for k, v in again.state_dict().items())
    fresh, _ = train_teacher(lat, text, neg, cfg, 2, 2, seed=0)  # without init: the same start as the first call
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())


def test_a_constant_rate_changes_only_what_follows_the_warm_up() -> None:
    cfg = teacher_config(128, 1, 8)
    lat, text, neg = torch.randn(4, 2, 16, 2, 2), torch.randn(4, 3, 8), torch.zeros(1, 3, 8)
    # 40 steps: a 2-step warm-up (5 %), identical under both schedules, so the two losses before its second update agree to the bit;
    # after it the cosine's rate falls below the constant one and the runs part.
    _, cosine = train_teacher(lat, text, neg, cfg, 40, 2, seed=3)
    _, constant = train_teacher(lat, text, neg, cfg, 40, 2, seed=3, decay=False)
    assert cosine[:2] == constant[:2]
    assert cosine[2:] != constant[2:]


def _clips() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    prompts = ["a red circle moving right", "a red circle moving left", "a blue square moving down",
               "a blue square moving up"]  # fmt: skip
    return torch.randn(4, 2, 16, 2, 2), torch.randn(4, 3, 8), torch.zeros(1, 3, 8), prompts


def test_the_world_teacher_learns_the_frame_order_on_two_orthogonal_directions_first() -> None:
    lat, text, neg, prompts = _clips()
    cfg = teacher_config(128, 1, 8)
    net, losses = train_world_teacher(lat, text, neg, prompts, cfg, 3, 2, 2, seed=5)
    assert len(losses) == 5
    # Its first phase is train_teacher on the right- and down-moving clips alone (indices 0 and 2), to the bit;
    # the second continues that network on every clip.
    sel = [i for i, p in enumerate(prompts) if p.endswith(ORDER_DIRECTIONS)]
    assert sel == [0, 2]
    first, first_losses = train_teacher(lat[sel], text[sel], neg, cfg, 3, 2, seed=5, decay=False)
    assert losses[:3] == first_losses
    _, rest = train_teacher(lat, text, neg, cfg, 2, 2, seed=6, init=first)
    assert losses[3:] == rest
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), first.state_dict().values(), strict=True))


def test_the_world_teacher_without_a_first_phase_is_the_plain_teacher() -> None:
    lat, text, neg, prompts = _clips()
    cfg = teacher_config(128, 1, 8)
    _, losses = train_world_teacher(lat, text, neg, prompts, cfg, 0, 2, 2, seed=5)
    assert losses == train_teacher(lat, text, neg, cfg, 2, 2, seed=5)[1]


def test_the_world_teacher_refuses_clips_it_cannot_split() -> None:
    lat, text, neg, prompts = _clips()
    cfg = teacher_config(128, 1, 8)
    with pytest.raises(ValueError, match="3 prompts for 4 training clips"):
        train_world_teacher(lat, text, neg, prompts[:3], cfg, 1, 1, 2, seed=0)
    with pytest.raises(ValueError, match="no training clip moves right or down"):
        train_world_teacher(lat[1::2], text[1::2], neg, prompts[1::2], cfg, 1, 1, 2, seed=0)
