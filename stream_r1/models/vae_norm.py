"""The Wan VAE's channel RMS norm with a CPU-fast L2 norm.

Why: diffusers' ``WanRMS_norm`` normalises with ``F.normalize(x, dim=1)``, i.e. ATen's ``linalg_vector_norm``
over the channel dimension, which is not the innermost one. On CPU (torch 2.13) that reduction takes a slow
generic kernel: 0.31 ms vs 0.01 ms for ``sqrt(sum(x**2))`` on a ``[1, 16, 3, 32, 32]`` activation, 2.1 vs
0.2 ms at ``[1, 96, 2, 64, 64]`` (one thread), and forward + backward is ~3x slower. It was 42 % of a tiny VAE
decode, so it dominated every CPU decode (the reward's rollout decode, evaluation, the shapes world's VAE
training). :class:`ChannelRMSNorm` computes the same function as ``sqrt(sum(x**2))`` (equal to float32
rounding, ~1e-7), on CPU only: on CUDA the stock kernel is fast and the squared temporary would cost a
full-size activation of memory in the 480x832 decode.
"""

from __future__ import annotations

import torch
from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm
from torch import nn

from stream_r1.models.replace import replace_modules

_EPS = 1e-12
"""``F.normalize``'s default lower bound on the norm."""


class ChannelRMSNorm(WanRMS_norm):
    """``WanRMS_norm`` (same parameters, same state-dict keys) whose CPU forward avoids ATen's slow norm."""

    @classmethod
    def replacing(cls, norm: WanRMS_norm) -> ChannelRMSNorm:
        """A :class:`ChannelRMSNorm` that shares ``norm``'s parameter objects (optimizers keep working)."""
        images = norm.channel_first and norm.gamma.ndim == 3  # (dim, 1, 1) for images, (dim, 1, 1, 1) for video
        new = cls(norm.gamma.shape[0], channel_first=norm.channel_first, images=images,
                  bias=isinstance(norm.bias, nn.Parameter))
        new.gamma = norm.gamma
        new.bias = norm.bias
        new.train(norm.training)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x / ||x||_2 * sqrt(dim) * gamma + bias`` over the channel dim (``[B, C, ...]`` or ``[..., C]``)."""
        if x.device.type != "cpu":
            return super().forward(x)
        dim = 1 if self.channel_first else -1
        # Like the stock norm: low-precision inputs (fp16, bf16, fp8) are normalised in float32.
        xf = x.float() if x.element_size() < 4 else x
        # Clamp the squared norm (not the root): the same value, and a zero vector gets gradient 0, not NaN.
        normalized = (xf / xf.square().sum(dim=dim, keepdim=True).clamp_min(_EPS**2).sqrt()).to(x.dtype)
        return normalized * self.scale * self.gamma + self.bias


def use_channel_rms_norm(model: nn.Module) -> int:
    """Replace every ``WanRMS_norm`` inside ``model`` by a :class:`ChannelRMSNorm` sharing its parameters.

    Returns:
        How many norms were replaced (0 when already replaced).
    """
    return replace_modules(model, WanRMS_norm, ChannelRMSNorm.replacing)
