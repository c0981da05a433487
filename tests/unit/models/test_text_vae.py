"""Text encoder (zero padding past the true length) and Wan VAE (normalisation, streaming decode) on tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stream_r1.models.text_encoder import TextEncoder, clean_prompt
from stream_r1.models.tiny import TINY_TEXT_LEN, build_tiny_text_encoder, build_tiny_tokenizer, build_tiny_vae
from stream_r1.models.vae import WanVAE


@pytest.fixture(scope="module")
def vae() -> WanVAE:
    return WanVAE(build_tiny_vae(3))


@pytest.fixture(scope="module")
def text_encoder() -> TextEncoder:
    tok = build_tiny_tokenizer()
    return TextEncoder(build_tiny_text_encoder(4, len(tok)), tok, TINY_TEXT_LEN)


def _latents(frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, frames, 16, 4, 4, generator=torch.Generator().manual_seed(seed))


def test_text_encoder_zero_pads_past_true_length(text_encoder: TextEncoder) -> None:
    prompts = ["A red fox trotting through fresh snow", "cat"]
    emb = text_encoder.encode(prompts)
    assert emb.shape == (2, TINY_TEXT_LEN, 32)
    lengths = [len(text_encoder.tokenizer(p)["input_ids"]) for p in prompts]  # words + </s>
    assert lengths == [8, 2]
    for row, n in zip(emb, lengths, strict=True):
        assert (row[:n].abs().sum(-1) > 0).all()
        assert torch.equal(row[n:], torch.zeros_like(row[n:]))
    # The padded prompt's real tokens are unaffected by padding (attention mask inside the encoder).
    alone = text_encoder.encode(["cat"])
    torch.testing.assert_close(alone[0, :2], emb[1, :2])


def test_text_encoder_truncates_cleans_and_checks_types(text_encoder: TextEncoder) -> None:
    long = " ".join(["fox"] * 40)
    assert text_encoder.encode([long]).shape == (1, TINY_TEXT_LEN, 32)
    assert clean_prompt("  a &amp;amp; b\n\t c ") == "a & b c"
    torch.testing.assert_close(text_encoder.encode(["red   fox\n"]), text_encoder.encode(["red fox"]))
    with pytest.raises(TypeError, match="list of str"):
        text_encoder.encode("red fox")  # type: ignore[arg-type]


def test_vae_normalisation_uses_config_mean_std(vae: WanVAE) -> None:
    mean = torch.tensor(vae.model.config.latents_mean)
    std = torch.tensor(vae.model.config.latents_std)
    raw = torch.randn(2, 3, 16, 4, 4)
    norm = vae.normalize(raw)
    torch.testing.assert_close(norm[:, :, 5], (raw[:, :, 5] - mean[5]) / std[5])
    torch.testing.assert_close(vae.denormalize(norm), raw)


@pytest.fixture(scope="module")
def full_decode(vae: WanVAE) -> tuple[torch.Tensor, torch.Tensor]:
    z = _latents(6)
    with torch.no_grad():
        return z, vae.decode(z)


@torch.no_grad()
@pytest.mark.parametrize("split", [(3, 3), (1, 2, 3)])
def test_streaming_decode_equals_full_decode(
    vae: WanVAE, full_decode: tuple[torch.Tensor, torch.Tensor], split: tuple[int, ...]
) -> None:
    z, full = full_decode
    assert full.shape == (1, 1 + 4 * 5, 3, 32, 32)
    assert full.min() >= -1 and full.max() <= 1
    pieces = list(vae.decode_chunks(z.split(list(split), dim=1)))
    assert [p.shape[1] for p in pieces] == [1 + 4 * (split[0] - 1)] + [4 * f for f in split[1:]]
    assert torch.equal(torch.cat(pieces, dim=1), full)


def test_vae_encode_shapes_and_errors(vae: WanVAE) -> None:
    with torch.no_grad():
        pixels = vae.decode(_latents(3))
        z = vae.encode(pixels)
    assert z.shape == (1, 3, 16, 4, 4)
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        vae.encode(pixels[:, :4])
    with pytest.raises(ValueError, match="library layout"):
        vae.decode(torch.zeros(1, 16, 3, 4, 4))


def test_from_pretrained_round_trip(vae: WanVAE, text_encoder: TextEncoder, tmp_path: Path) -> None:
    vae.model.save_pretrained(str(tmp_path / "vae"))
    text_encoder.model.save_pretrained(str(tmp_path / "te"))
    text_encoder.tokenizer.save_pretrained(str(tmp_path / "tok"))
    v2 = WanVAE.from_pretrained(tmp_path / "vae")
    t2 = TextEncoder.from_pretrained(tmp_path / "te", tmp_path / "tok", TINY_TEXT_LEN)
    z = _latents(3)
    with torch.no_grad():
        assert torch.equal(v2.decode(z), vae.decode(z))
    assert torch.equal(t2.encode(["a red fox"]), text_encoder.encode(["a red fox"]))
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        WanVAE.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="tokenizer directory"):
        TextEncoder.from_pretrained(tmp_path / "te", tmp_path / "missing", 16)
