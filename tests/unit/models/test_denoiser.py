"""x0 wrappers: layout conversion, flow/x0 consistency with stream_r1.diffusion, read-only cache."""

from __future__ import annotations

import pytest
import torch
from diffusers import WanTransformer3DModel

from stream_r1.diffusion import add_noise, lookup_sigma, x0_from_flow
from stream_r1.models.causal_wan import CausalWanTransformer
from stream_r1.models.denoiser import BidirectionalDenoiser, CausalDenoiser


def _lat(frames: int, seed: int) -> torch.Tensor:
    return torch.randn(1, frames, 16, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_bidirectional_x0_is_xt_minus_sigma_v_in_library_layout(
    stock_wan: WanTransformer3DModel, text_emb: torch.Tensor
) -> None:
    den = BidirectionalDenoiser(stock_wan, shift=8.0)
    x_t, t = _lat(3, 0), torch.tensor([731.0])
    with torch.no_grad():
        x0 = den.predict_x0(x_t, t, text_emb)
        v_ref = stock_wan(x_t.permute(0, 2, 1, 3, 4), t, text_emb, return_dict=False)[0].permute(0, 2, 1, 3, 4)
    sigma = lookup_sigma(t, 8.0).item()
    assert x0.shape == x_t.shape
    assert torch.allclose(x0, x_t - sigma * v_ref, atol=1e-6)
    assert torch.allclose(den.flow_from_x0(x0, x_t, t), v_ref, atol=1e-5)
    with pytest.raises(ValueError, match="one timestep per sample"):
        den.predict_x0(x_t, torch.tensor([[1.0, 2.0, 3.0]]), text_emb)
    with pytest.raises(ValueError, match="library layout"):
        den.predict_x0(x_t.permute(0, 2, 1, 3, 4), t, text_emb)


def test_causal_one_chunk_matches_bidirectional_teacher_on_same_weights(
    stock_wan: WanTransformer3DModel, causal_wan: CausalWanTransformer, text_emb: torch.Tensor
) -> None:
    x_t = _lat(3, 1)
    with torch.no_grad():
        a = BidirectionalDenoiser(stock_wan).predict_x0(x_t, torch.tensor([500.0]), text_emb)
        b = CausalDenoiser(causal_wan).predict_x0(x_t, torch.full((1, 3), 500.0), text_emb, None, 0)
    assert (a - b).abs().max().item() <= 1e-5


def test_predict_x0_reads_cache_and_write_context_is_the_only_writer(
    causal_wan: CausalWanTransformer, text_emb: torch.Tensor
) -> None:
    den = CausalDenoiser(causal_wan, frames_per_block=3)
    cache = den.new_cache(1, 9, (8, 8), rolling=False, dtype=torch.float32, device="cpu")
    clean = [_lat(3, 10 + c) for c in range(3)]
    den.write_context(clean[0], text_emb, cache, 0)  # grad mode on: write_context goes no-grad by itself
    den.write_context(clean[1], text_emb, cache, 3)
    snapshot = [k.clone() for k in cache.keys]
    x_t = add_noise(clean[2], _lat(3, 99), torch.full((1, 3), 700.0), 5.0)
    t = torch.full((1, 3), 700.0)
    x0 = den.predict_x0(x_t, t, text_emb, cache, 6)  # with grad
    assert x0.requires_grad
    assert cache.length_frames == 6 and all(torch.equal(a, b) for a, b in zip(snapshot, cache.keys, strict=True))
    assert not any(k.requires_grad for k in cache.keys)
    # == the block-masked full sequence with the clean chunks at t = 0 (teacher forcing on the context)
    seq = torch.cat([clean[0], clean[1], x_t], dim=1)
    t_seq = torch.cat([torch.zeros(1, 6), t], dim=1)
    with torch.no_grad():
        full = den.forward_full(seq, t_seq, text_emb)
    assert (full[:, 6:] - x0.detach()).abs().max().item() <= 1e-5


def test_x0_and_flow_conversions_match_diffusion_module(causal_wan: CausalWanTransformer, text_emb: torch.Tensor) -> None:
    den = CausalDenoiser(causal_wan, shift=5.0)
    x_t, t = _lat(3, 2), torch.tensor([[1000.0, 937.5, 833.33]])
    with torch.no_grad():
        v = den.predict_flow(x_t, t, text_emb, None, 0)
        x0 = den.predict_x0(x_t, t, text_emb, None, 0)
    assert torch.allclose(x0, x0_from_flow(v, x_t, t, 5.0), atol=0)
    assert torch.allclose(den.flow_from_x0(x0, x_t, t), v, atol=1e-5)


def test_constructor_and_cache_errors(causal_wan: CausalWanTransformer, stock_wan: WanTransformer3DModel) -> None:
    with pytest.raises(TypeError, match="CausalWanTransformer"):
        CausalDenoiser(stock_wan)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sink_frames"):
        CausalDenoiser(causal_wan, sink_frames=3)
    den = CausalDenoiser(causal_wan)
    with pytest.raises(ValueError, match="rolling=True needs local_attn_frames"):
        den.new_cache(1, 9, (8, 8), rolling=True, dtype=torch.float32, device="cpu")
    with pytest.raises(ValueError, match="latent_hw"):
        den.new_cache(1, 9, (7, 8), rolling=False, dtype=torch.float32, device="cpu")
    with pytest.raises(ValueError, match=r"per-frame \[B, F\]"):
        den.predict_x0(_lat(3, 0), torch.tensor([5.0]), torch.zeros(1, 7, 32), None, 0)
