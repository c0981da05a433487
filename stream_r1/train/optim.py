"""AdamW for generator and critic (docs/method.md §1.6): beta1 = 0, beta2 = 0.999, wd 0.01, no schedule."""

from __future__ import annotations

import torch
from torch import nn

from stream_r1.config.schema import OptimConfig


def build_adamw(model: nn.Module, lr: float, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of ``model``.

    Args:
        model: The (possibly FSDP2-sharded) network.
        lr: Constant learning rate.
        cfg: Betas, epsilon and weight decay.

    Raises:
        ValueError: ``lr`` not positive, or ``model`` has no trainable parameters.
    """
    if lr <= 0:
        raise ValueError(f"learning rate {lr} must be > 0; set optim.lr_generator / optim.lr_critic")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters to optimise")
    return torch.optim.AdamW(
        params, lr=lr, betas=(float(cfg.beta1), float(cfg.beta2)), eps=cfg.eps, weight_decay=cfg.weight_decay
    )
