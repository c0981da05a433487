"""The Wan VAE's causal 3-D convolution without the products of its zero padding on a stream's first frame.

Why: diffusers' ``WanCausalConv3d`` pads ``kernel_t - 1`` zero frames in front of its input when no cached
frames are passed, then runs a full 3-D convolution. The Wan encoder and decoder always process a video's
first frame alone (then chunks with cached frames), so on that first chunk a ``3 x 3 x 3`` convolution
computes three temporal taps of which two multiply zeros: the output is exactly the 2-D convolution of the
frame with the kernel's last temporal slice. Every single-frame forward pays that: each decode's first
latent frame, and all of the shapes world's image-phase VAE training (one frame per sample), where the
convolutions forward and backward were ~45 % of a step. :class:`FirstFrameCausalConv3d` computes that
case as the 2-D convolution (same parameters, same state-dict keys; the past slices get an exactly zero
gradient either way, since their inputs are zeros); every other call is the stock forward. Measured in
``benchmarks/shapes_vae_probe.py``-sized training steps (docs/benchmarks.md, "Shapes world"). The sums
are the same products in another order, so results agree to float32 rounding (~1e-7), not bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d
from torch import nn

from stream_r1.models.replace import replace_modules


class FirstFrameCausalConv3d(WanCausalConv3d):
    """``WanCausalConv3d`` whose uncached single-frame forward skips the taps that see only zero padding."""

    @classmethod
    def replacing(cls, conv: WanCausalConv3d) -> FirstFrameCausalConv3d:
        """A :class:`FirstFrameCausalConv3d` sharing ``conv``'s parameter objects (optimizers keep working)."""
        # WanCausalConv3d keeps its padding only in the F.pad form: (w, w, h, h, 2 t, 0).
        pad = conv._padding
        with torch.device("meta"):  # its own weight would be initialised only to be replaced by conv's
            new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, (pad[4] // 2, pad[2], pad[0]))
        if new._padding != pad:
            raise ValueError(f"cannot rebuild the causal padding {pad} of {conv}")
        new.weight = conv.weight
        new.bias = conv.bias
        new.train(conv.training)
        return new

    def _first_frame_only(self, x: torch.Tensor, cache_x: torch.Tensor | None) -> bool:
        """True when the stock forward would pad ``kernel_t - 1`` zero frames before a single input frame."""
        kernel_t = self.weight.shape[2]
        return (
            cache_x is None and kernel_t > 1 and x.shape[2] == 1 and self._padding[4] == kernel_t - 1
            and self.stride[0] == 1 and self.dilation[0] == 1
        )

    def forward(self, x: torch.Tensor, cache_x: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, C, T, H, W]`` -> ``[B, C_out, T', H', W']``, as the stock causal convolution."""
        if not self._first_frame_only(x, cache_x):
            return super().forward(x, cache_x)
        frame = F.pad(x[:, :, 0], list(self._padding[:4]))
        out = F.conv2d(frame, self.weight[:, :, -1], self.bias, self.stride[1:], 0, self.dilation[1:], self.groups)
        return out.unsqueeze(2)


def use_first_frame_convs(model: nn.Module) -> int:
    """Replace every stock ``WanCausalConv3d`` inside ``model`` by a :class:`FirstFrameCausalConv3d` sharing its
    parameters.

    Returns:
        How many convolutions were replaced (0 when already replaced).
    """
    return replace_modules(model, WanCausalConv3d, FirstFrameCausalConv3d.replacing)
