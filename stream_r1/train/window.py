"""Per-window bookkeeping of the training loop: losses, distiller metrics, exit steps, timing, memory."""

from __future__ import annotations

import resource
import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from stream_r1.method import metric_keys as mk
from stream_r1.train.metrics import effective_sample_size


@dataclass
class WindowLog:
    """Accumulates one optimizer step's micro-step results (means are over micro-steps).

    Attributes:
        generator: ``{metric: [value per generator micro-step]}``.
        critic: ``{metric: [value per critic micro-step]}``.
        exit_steps: Exit steps drawn in the window (generator and critic rollouts).
        w_inter: Per-rollout W_inter of this rank's generator micro-steps.
        started: ``time.perf_counter()`` at the window start.
    """

    generator: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    critic: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    exit_steps: list[int] = field(default_factory=list)
    w_inter: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def add_generator(self, loss: torch.Tensor, metrics: dict[str, float], exit_step: int) -> None:
        """Record one generator micro-step."""
        self.generator[mk.LOSS_GENERATOR].append(float(loss.detach()))
        for k, v in metrics.items():
            self.generator[k].append(float(v))
        if mk.REWARD_W_INTER in metrics:
            self.w_inter.append(float(metrics[mk.REWARD_W_INTER]))
        self.exit_steps.append(exit_step)

    def add_critic(self, loss: torch.Tensor, metrics: dict[str, float], exit_step: int) -> None:
        """Record one critic micro-step."""
        self.critic[mk.LOSS_CRITIC].append(float(loss.detach()))
        for k, v in metrics.items():
            self.critic[k].append(float(v))
        self.exit_steps.append(exit_step)

    def scalars(self) -> dict[str, float]:
        """Window means of every recorded metric."""
        out: dict[str, float] = {}
        for table in (self.generator, self.critic):
            for k, vals in table.items():
                out[k] = sum(vals) / len(vals)
        return out


def window_ess(all_w_inter: list[list[float]]) -> dict[str, float]:
    """ESS of the rollout weights gathered from every rank over one window (docs/method.md §3.2 obs.)."""
    flat = [w for rank in all_w_inter for w in rank]
    if not flat:
        return {}
    ess = effective_sample_size(flat)
    return {"rollout/ess": ess, "rollout/ess_fraction": ess / len(flat)}


def system_scalars(step_seconds: float, rollouts: int) -> dict[str, float]:
    """Step time, throughput and memory (host RSS; CUDA max allocated when on GPU)."""
    out = {
        "time/step_seconds": step_seconds,
        "time/rollouts_per_second": rollouts / step_seconds if step_seconds > 0 else 0.0,
        "memory/host_max_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
    }
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            out["memory/host_rss_gb"] = int(f.read().split()[1]) * resource.getpagesize() / 1024**3
    except OSError:
        pass
    if torch.cuda.is_available():
        out["memory/cuda_max_allocated_gb"] = torch.cuda.max_memory_allocated() / 1024**3
        out["memory/cuda_max_reserved_gb"] = torch.cuda.max_memory_reserved() / 1024**3
    return out
