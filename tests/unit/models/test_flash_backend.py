"""The optional flash-attn backend: a teaching error where it cannot run, parity on CUDA (gpu marker)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from stream_r1.config import load_config
from stream_r1.models.causal_wan import CausalWanTransformer
from stream_r1.models.kv_cache import KVCache
from stream_r1.train.preflight import preflight

from .conftest import LATENT_HW


def test_flash_on_cpu_fails_before_any_work(causal_wan: CausalWanTransformer, text_emb: torch.Tensor) -> None:
    x = torch.zeros(1, 16, 3, *LATENT_HW)
    with pytest.raises(ValueError, match=r"attention_backend='flash' needs CUDA.*stream-r1\[gpu\].*'sdpa'"):
        causal_wan(x, torch.zeros(1, 3), text_emb, frames_per_block=3, attention_backend="flash")


def test_train_preflight_rejects_flash_without_cuda(tiny_checkpoints, tmp_path) -> None:
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn"):
        pytest.skip("flash-attn can run here")
    cfg = load_config("tiny_cpu", ["model.attention_backend=flash", f"checkpoints.root={tiny_checkpoints}"])
    with pytest.raises(ValueError, match="needs CUDA and flash-attn"):
        preflight(cfg, tmp_path / "out", None, 1)


@pytest.mark.gpu
def test_flash_matches_sdpa_on_cuda(causal_wan: CausalWanTransformer, text_emb: torch.Tensor) -> None:
    if importlib.util.find_spec("flash_attn") is None:
        pytest.skip("flash-attn (the gpu extra) is not installed")
    model = causal_wan.to("cuda", torch.bfloat16)
    x = torch.randn(1, 16, 6, *LATENT_HW, device="cuda", dtype=torch.bfloat16)
    t = torch.full((1, 6), 500.0, device="cuda")
    emb = text_emb.to("cuda", torch.bfloat16)
    with torch.no_grad():
        ref = model(x, t, emb, frames_per_block=3, return_dict=False)[0]
        out = model(x, t, emb, frames_per_block=3, attention_backend="flash", return_dict=False)[0]  # masked: flex
        cache = KVCache.allocate(num_layers=2, batch_size=1, capacity_frames=6, tokens_per_frame=16, heads=2,
                                 head_dim=16, dtype=torch.bfloat16, device="cuda")
        chunk = model(x[:, :, :3], t[:, :3], emb, kv_cache=cache, attention_backend="flash", return_dict=False)[0]
    assert (ref - out).abs().max().item() < 2e-2
    assert (ref[:, :, :3] - chunk).abs().max().item() < 2e-2
