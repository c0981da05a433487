"""The Wan2.1 VAE in the library layout, with Wan's latent normalisation and streaming decode (docs/method.md §4.3).

Library latents are ``[B, F, C, H, W]`` and normalised, ``z = (mu - mean_c) / std_c`` with the 16 per-channel
constants from the VAE config (``latents_mean`` / ``latents_std``, as Self-Forcing's wrapper). diffusers'
``AutoencoderKLWan`` works on un-normalised ``[B, C, F, H, W]``; this module is the only place that converts.
Pixels are ``[B, T, 3, Hp, Wp]`` in ``[-1, 1]`` with ``T = 1 + 4 (F - 1)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

from stream_r1.models.vae_conv import use_first_frame_convs
from stream_r1.models.vae_norm import use_channel_rms_norm
from stream_r1.utils.logging import get_logger

logger = get_logger(__name__)


class StreamingDecoder:
    """Decode latent chunks as they arrive, carrying the VAE's causal feature cache between chunks.

    The decoder is causal in time and diffusers' own ``decode`` already runs it latent-frame by latent-frame
    with a feature cache; keeping that cache alive across calls makes chunked decoding equal to decoding the
    whole video at once, while only the current chunk's pixels are ever held.
    """

    def __init__(self, vae: WanVAE) -> None:
        self._vae = vae
        num_convs = sum(isinstance(m, WanCausalConv3d) for m in vae.model.decoder.modules())
        self._feat_cache: list[torch.Tensor | None] = [None] * num_convs
        self.frames_seen = 0
        """Latent frames decoded so far."""

    def push(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode the next chunk.

        Args:
            latents: Normalised latents ``[B, f, C, H, W]`` that follow the frames pushed so far.

        Returns:
            Pixels ``[B, t, 3, 8H, 8W]`` in ``[-1, 1]``; ``t = 1 + 4 (f - 1)`` for the first chunk, ``4 f`` after.
        """
        vae = self._vae
        z = vae.denormalize(latents).permute(0, 2, 1, 3, 4).to(vae.dtype)  # [B, C, f, H, W]
        x = vae.model.post_quant_conv(z)  # 1x1x1 conv: chunk-local
        outs = []
        for i in range(x.shape[2]):
            outs.append(
                vae.model.decoder(
                    x[:, :, i : i + 1],
                    feat_cache=self._feat_cache,
                    feat_idx=[0],
                    first_chunk=self.frames_seen == 0,
                )
            )
            self.frames_seen += 1
        out = torch.clamp(torch.cat(outs, dim=2), -1.0, 1.0)
        return out.permute(0, 2, 1, 3, 4)


class WanVAE:
    """``AutoencoderKLWan`` with library layout and normalised latents.

    Args:
        model: The diffusers VAE.
    """

    def __init__(self, model: AutoencoderKLWan) -> None:
        if model.config.patch_size is not None:
            raise ValueError(
                f"AutoencoderKLWan with patch_size={model.config.patch_size} (Wan2.2) is not supported; "
                "use the Wan2.1 VAE"
            )
        use_channel_rms_norm(model)  # same function, CPU-fast (see stream_r1.models.vae_norm)
        use_first_frame_convs(model)  # same function, no products of the first frame's zero padding
        self.model = model.eval()
        cfg = model.config
        self._mean = torch.tensor(cfg.latents_mean, dtype=torch.float32)
        self._std = torch.tensor(cfg.latents_std, dtype=torch.float32)
        if self._mean.numel() != cfg.z_dim or self._std.numel() != cfg.z_dim:
            raise ValueError(
                f"VAE config latents_mean/latents_std have {self._mean.numel()}/{self._std.numel()} entries; "
                f"expected z_dim={cfg.z_dim}"
            )

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> WanVAE:
        """Load a diffusers ``AutoencoderKLWan`` directory (local files only).

        Raises:
            FileNotFoundError: ``directory`` or its ``config.json`` is missing.
        """
        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(f"VAE directory {directory} has no config.json (expected diffusers AutoencoderKLWan)")
        model = AutoencoderKLWan.from_pretrained(str(directory), torch_dtype=dtype, local_files_only=True)
        return cls(model.to(device))

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype of the VAE."""
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """Device of the VAE."""
        return next(self.model.parameters()).device

    @property
    def z_dim(self) -> int:
        """Latent channels C."""
        return int(self.model.config.z_dim)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, 1, -1, 1, 1)  # broadcast over [B, F, C, H, W]
        return (self._mean.to(like.device, like.dtype).view(shape), self._std.to(like.device, like.dtype).view(shape))

    def normalize(self, mu: torch.Tensor) -> torch.Tensor:
        """Raw posterior means ``[B, F, C, H, W]`` -> normalised latents."""
        mean, std = self._stats(mu)
        return (mu - mean) / std

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents ``[B, F, C, H, W]`` -> raw VAE latents."""
        mean, std = self._stats(latents)
        return latents * std + mean

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode a whole video (differentiable).

        Args:
            latents: Normalised latents ``[B, F, C, H, W]``.

        Returns:
            Pixels ``[B, 1 + 4 (F - 1), 3, 8H, 8W]`` clamped to ``[-1, 1]``.
        """
        self._check_latents(latents)
        z = self.denormalize(latents).permute(0, 2, 1, 3, 4).to(self.dtype)
        out = self.model.decode(z, return_dict=False)[0]
        return out.permute(0, 2, 1, 3, 4)

    def new_stream(self) -> StreamingDecoder:
        """A fresh :class:`StreamingDecoder` (one per video)."""
        return StreamingDecoder(self)

    def decode_chunks(self, chunks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Decode latent chunks ``[B, f, C, H, W]`` as they arrive; yields pixel chunks ``[B, t, 3, Hp, Wp]``.

        Concatenating the yielded chunks equals :meth:`decode` of the concatenated latents.
        """
        stream = self.new_stream()
        for chunk in chunks:
            self._check_latents(chunk)
            yield stream.push(chunk)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Encode pixels ``[B, T, 3, Hp, Wp]`` in ``[-1, 1]`` (``T = 1 + 4k``) to normalised latent means.

        Returns:
            ``[B, 1 + (T - 1) // 4, C, Hp / 8, Wp / 8]``.

        Raises:
            ValueError: ``pixels`` is not 5-D with 3 channels, or ``T - 1`` is not a multiple of 4.
        """
        if pixels.ndim != 5 or pixels.shape[2] != 3:
            raise ValueError(f"pixels must be [B, T, 3, H, W]; got shape {tuple(pixels.shape)}")
        if (pixels.shape[1] - 1) % 4:
            raise ValueError(f"pixel frame count T={pixels.shape[1]} must be 1 + 4k (e.g. 1, 5, 81)")
        x = pixels.permute(0, 2, 1, 3, 4).to(self.dtype)
        mu = self.model.encode(x).latent_dist.mode()
        return self.normalize(mu.permute(0, 2, 1, 3, 4).float())

    def _check_latents(self, latents: torch.Tensor) -> None:
        if latents.ndim != 5 or latents.shape[2] != self.z_dim:
            raise ValueError(
                f"latents must be [B, F, {self.z_dim}, H, W] (library layout); got shape {tuple(latents.shape)}"
            )
