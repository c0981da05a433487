"""Exponential moving average of the generator in fp32 on CPU (docs/method.md §1.6, §5 item 18).

The shadow holds full (gathered) parameters; under FSDP2 only rank 0 keeps it (the gather is a
collective, so every rank calls :meth:`EMA.update`). Decay 0.99:
``shadow <- d * shadow + (1 - d) * param``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

StateFn = Callable[[nn.Module], dict[str, torch.Tensor]]


def _trainable_names(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


class EMA:
    """fp32 CPU shadow of a module's trainable parameters.

    Args:
        decay: EMA decay ``d``.
        gather: Returns the module's full state dict (empty on ranks other than 0).
    """

    def __init__(self, decay: float, gather: StateFn) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay={decay} must be in [0, 1)")
        self.decay = decay
        self._gather = gather
        self.shadow: dict[str, torch.Tensor] = {}
        self.num_updates = 0

    @classmethod
    def create(cls, model: nn.Module, decay: float, gather: StateFn) -> EMA:
        """A shadow initialised to the model's current parameters."""
        ema = cls(decay, gather)
        names = _trainable_names(model)
        full = gather(model)
        ema.shadow = {k: v.detach().to("cpu", torch.float32).clone() for k, v in full.items() if k in names}
        return ema

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards the model's current parameters (collective under FSDP2)."""
        full = self._gather(model)
        self.num_updates += 1
        if not self.shadow:
            return  # not rank 0
        for k, s in self.shadow.items():
            s.mul_(self.decay).add_(full[k].to("cpu", torch.float32), alpha=1.0 - self.decay)

    def state_dict(self) -> dict[str, object]:
        """``{"decay", "num_updates", "shadow"}`` (shadow empty off rank 0)."""
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict[str, object], *, keep_shadow: bool = True) -> None:
        """Restore from :meth:`state_dict`; ``keep_shadow=False`` drops the tensors (non-zero ranks)."""
        self.decay = float(state["decay"])  # type: ignore[arg-type]
        self.num_updates = int(state["num_updates"])  # type: ignore[call-overload]
        shadow = state["shadow"]
        assert isinstance(shadow, dict)
        self.shadow = {k: v.to("cpu", torch.float32).clone() for k, v in shadow.items()} if keep_shadow else {}
