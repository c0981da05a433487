"""Stream-R1 weights: Inter-Reliability, Intra-Perplexity, saliency fusion, reward balancing.

Public, pure functions on torch tensors (docs/method.md §3.2 items 3-6, §3.3 E-H). Every weight returned
here is detached: the reward only reweights the DMD gradient, it never receives gradients.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any

import torch

RANGE_EPS = 1e-8
"""Min-max normalisation degenerates (-> all ones) when max - min <= this (SR1)."""
COMBINATIONS = ("adaptive", "mean", "max")


def inter_reliability_weight(r_final: float | torch.Tensor, beta: float) -> torch.Tensor:
    """W_inter = exp(beta * r_final) as a detached float64 scalar (§3.3-H).

    Args:
        r_final: The (balanced) scalar reward of one rollout.
        beta: Inverse temperature (2.0 in the recipe; larger = sharper weighting, 0 = no reward effect).

    Returns:
        0-d float64 tensor.

    Raises:
        ValueError: ``r_final`` is not a single finite value.
    """
    r = torch.as_tensor(r_final, dtype=torch.float64).detach()  # a Python float must not pass through float32
    if r.numel() != 1 or not bool(torch.isfinite(r).all()):
        raise ValueError(f"r_final must be one finite number, got {r_final!r}")
    return torch.exp(float(beta) * r.reshape(()))


def _minmax(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Min-max to [0, 1] over ``dims``; slices whose range is <= RANGE_EPS become all ones (SR1)."""
    lo = x.amin(dim=dims, keepdim=True)
    hi = x.amax(dim=dims, keepdim=True)
    rng = hi - lo
    return torch.where(rng > RANGE_EPS, (x - lo) / rng.clamp_min(RANGE_EPS), torch.ones_like(x))


def temporal_factor(
    saliency: torch.Tensor, *, temporal_min: float = 0.2, temporal_strength: float = 1.0, normalise: bool = True
) -> torch.Tensor:
    """Temporal profile weights tau ``[F]`` (mean 1) of §3.2 item 6.

    p_f = mean_{h,w} S_f, min-max to [0,1]; tau = (1 - s_t) + s_t * p_hat; clamp >= tau_min; / mean(tau)
    (skipped with ``normalise=False``). Float64, detached.
    """
    s = saliency.detach().to(torch.float64)
    profile = _minmax(s.mean(dim=(1, 2)), (0,))
    tau = ((1.0 - temporal_strength) + temporal_strength * profile).clamp_min(temporal_min)
    return tau / tau.mean() if normalise else tau


def spatial_factor(
    saliency: torch.Tensor, *, spatial_min: float = 0.15, spatial_strength: float = 1.0, normalise: bool = True
) -> torch.Tensor:
    """Per-frame spatial weights sigma ``[F, H, W]`` (each frame mean 1) of §3.2 item 6.

    Per frame: min-max to [0,1]; sigma = (1 - s_s) + s_s * S_hat; clamp >= sigma_min; / frame mean
    (skipped with ``normalise=False``). Float64, detached.
    """
    s = saliency.detach().to(torch.float64)
    sigma = ((1.0 - spatial_strength) + spatial_strength * _minmax(s, (1, 2))).clamp_min(spatial_min)
    return sigma / sigma.mean(dim=(1, 2), keepdim=True) if normalise else sigma


def intra_perplexity_weights(
    saliency: torch.Tensor,
    *,
    spatial_min: float = 0.15,
    temporal_min: float = 0.2,
    spatial_strength: float = 1.0,
    temporal_strength: float = 1.0,
) -> torch.Tensor:
    """W_intra ``[F, H, W]``: temporal x spatial factorisation, mean 1 (docs/method.md §3.2 item 6, §3.3-F).

    ``W = tau_f * sigma_f(h, w)``, then ``W /= mean(W)``. Broadcast over the 16 latent channels by the caller.

    Args:
        saliency: Fused saliency on the latent grid ``[F, H, W]`` (non-negative).
        spatial_min: Floor sigma_min of the spatial weights before per-frame normalisation.
        temporal_min: Floor tau_min of the temporal weights before normalisation.
        spatial_strength: s_s.
        temporal_strength: s_t (0 disables the temporal factor: tau = 1).

    Returns:
        Detached ``[F, H, W]`` with mean 1, computed in float64 and returned in float64 for float64 input,
        float32 otherwise.

    Raises:
        ValueError: Wrong rank, non-finite values, or floors/strengths out of [0, 1].
    """
    if saliency.ndim != 3:
        raise ValueError(f"saliency must be [F, H, W], got shape {tuple(saliency.shape)}")
    if not bool(torch.isfinite(saliency).all()):
        raise ValueError("saliency contains NaN/inf; check the reward gradients")
    for name, v in (
        ("spatial_min", spatial_min),
        ("temporal_min", temporal_min),
        ("spatial_strength", spatial_strength),
        ("temporal_strength", temporal_strength),
    ):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name}={v} must be in [0, 1]")
    tau = temporal_factor(saliency, temporal_min=temporal_min, temporal_strength=temporal_strength)
    sigma = spatial_factor(saliency, spatial_min=spatial_min, spatial_strength=spatial_strength)
    w = tau.view(-1, 1, 1) * sigma
    out_dtype = saliency.dtype if saliency.dtype in (torch.float32, torch.float64) else torch.float32
    return (w / w.mean()).to(out_dtype)


def fusion_weights(rewards: dict[str, float], axes: list[str], temperature: float = 1.0) -> dict[str, float]:
    """Adaptive fusion weights softmax(-r / T) over ``axes`` (the weaker axis gets more weight, §3.2 item 5)."""
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    missing = [a for a in axes if a not in rewards]
    if missing:
        raise ValueError(f"rewards lack axes {missing}; got {sorted(rewards)}")
    r = torch.tensor([float(rewards[a]) for a in axes], dtype=torch.float64)
    w = torch.softmax(-r / temperature, dim=0)
    return {a: float(w[i]) for i, a in enumerate(axes)}


def fuse_saliency(
    maps: dict[str, torch.Tensor],
    rewards: dict[str, float],
    *,
    mode: str = "adaptive",
    temperature: float = 1.0,
) -> torch.Tensor:
    """Fuse per-axis saliency maps (§3.3-E).

    Args:
        maps: ``{axis: [F, H, W]}``; the dict order is the softmax order (``reward.saliency_metrics``).
        rewards: Per-axis z-rewards of this rollout (before the balance penalty); used by ``adaptive``.
        mode: ``adaptive`` (sum_a softmax(-r/T)_a * S_a), ``mean`` or ``max`` (elementwise).
        temperature: T of the adaptive softmax.

    Returns:
        Detached ``[F, H, W]`` float32.

    Raises:
        ValueError: Empty maps, mismatched shapes, unknown mode, or missing rewards.
    """
    if not maps:
        raise ValueError("maps is empty; pass at least one axis' saliency")
    shapes = {tuple(m.shape) for m in maps.values()}
    if len(shapes) != 1:
        raise ValueError(f"saliency maps have different shapes {sorted(shapes)}; map them to one grid first")
    stack = torch.stack([m.detach().float() for m in maps.values()])
    if mode == "adaptive":
        w = fusion_weights(rewards, list(maps), temperature)
        weights = torch.tensor(list(w.values()), dtype=stack.dtype, device=stack.device)
        return (weights.view(-1, *([1] * (stack.ndim - 1))) * stack).sum(0)
    if mode == "mean":
        return stack.mean(0)
    if mode == "max":
        return stack.amax(0)
    raise ValueError(f"reward.combination={mode!r}; allowed {COMBINATIONS}")


AllReduceMean = Callable[[dict[str, float]], dict[str, float]]
"""Averages per-axis rewards over ranks (supplied by ``stream_r1.distributed``; reward/ never imports it)."""


class RewardBalancer:
    """Adaptive Reward Balancing (docs/method.md §3.2 item 3, §3.3-G).

    Per-axis deques of the last ``window`` z-rewards. Each :meth:`update`: increment the counter, append
    the current rewards (averaged over ranks first when ``all_reduce`` is given), then once
    ``counter >= warmup`` and every deque holds >= 4 entries: split each deque into its first
    ``floor(n/2)`` and remaining entries, ``delta_a = mean(second) - mean(first)``, and the penalty is the
    unbiased std of the deltas (0 before that). ``r_final = r - lam * penalty`` is applied by the caller.

    Args:
        window: Deque length per axis.
        warmup: Updates before the penalty applies.
        lam: lambda of r_final (stored for callers; :meth:`update` returns the raw penalty).
        axes: Axes tracked (default VQ, MQ, TA).
        all_reduce: Optional rank-averaging hook (``balance_sync: all_reduce``).
    """

    def __init__(
        self,
        window: int = 50,
        warmup: int = 50,
        lam: float = 0.5,
        *,
        axes: tuple[str, ...] = ("VQ", "MQ", "TA"),
        all_reduce: AllReduceMean | None = None,
    ) -> None:
        if window < 4:
            raise ValueError(f"balance window={window} must be >= 4 (split-half deltas need 2 per half)")
        if len(axes) < 2:
            raise ValueError(f"balance axes={axes} needs >= 2 axes (std over per-axis deltas)")
        self.window, self.warmup, self.lam, self.axes = int(window), int(warmup), float(lam), tuple(axes)
        self.all_reduce = all_reduce
        self.counter = 0
        self.history: dict[str, deque[float]] = {a: deque(maxlen=self.window) for a in self.axes}

    def update(self, rewards: dict[str, float]) -> float:
        """Record one generator micro-step's per-axis z-rewards and return the current penalty."""
        missing = [a for a in self.axes if a not in rewards]
        if missing:
            raise ValueError(f"rewards lack axes {missing}; the balancer tracks {self.axes}")
        current = {a: float(rewards[a]) for a in self.axes}
        if self.all_reduce is not None:
            current = {a: float(v) for a, v in self.all_reduce(current).items()}
        self.counter += 1
        for a in self.axes:
            self.history[a].append(current[a])
        return self.penalty()

    def penalty(self) -> float:
        """Unbiased std of the split-half deltas, or 0 during warm-up / with < 4 entries."""
        if self.counter < self.warmup or any(len(d) < 4 for d in self.history.values()):
            return 0.0
        deltas = []
        for a in self.axes:
            vals = list(self.history[a])
            half = len(vals) // 2
            deltas.append(sum(vals[half:]) / (len(vals) - half) - sum(vals[:half]) / half)
        mean = sum(deltas) / len(deltas)
        return math.sqrt(sum((d - mean) ** 2 for d in deltas) / (len(deltas) - 1))

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (saved with training checkpoints)."""
        return {
            "window": self.window,
            "warmup": self.warmup,
            "lam": self.lam,
            "axes": list(self.axes),
            "counter": self.counter,
            "history": {a: list(d) for a, d in self.history.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output.

        Raises:
            ValueError: The saved window or axes differ from this balancer's configuration.
        """
        if int(state["window"]) != self.window or tuple(state["axes"]) != self.axes:
            raise ValueError(
                f"balancer state has window={state['window']}, axes={state['axes']} but this run uses "
                f"window={self.window}, axes={list(self.axes)}; keep reward.balance_window/dims when resuming"
            )
        self.counter = int(state["counter"])
        self.history = {a: deque((float(v) for v in state["history"][a]), maxlen=self.window) for a in self.axes}
