"""The update schedule of the reference trainer as a pure object (docs/method.md §1.6, §3.2 item 8).

Raw micro-steps ``r = 0 .. num_optimizer_steps * accum - 1``; ``optimizer_step = r // accum``.
The critic accumulates on every micro-step and steps once at each window end. The generator
trains on optimizer steps with ``optimizer_step % gen_update_every == 0`` over the whole window
(all ``accum`` micro-steps; grads zeroed at the window start, one clip + step at its end), and
the EMA is updated after each generator step. The EMA shadow is created after raw step ``r``
completes once ``r + 1 >= ema_start_raw_step`` (SR1 increments its counter first, then checks).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MicroStep:
    """What one raw micro-step does.

    Attributes:
        raw_step: Index of this micro-step (0-based).
        optimizer_step: ``raw_step // accum``: the window this micro-step belongs to.
        micro_index: Position inside the window (0 .. accum-1).
        train_generator: The generator accumulates a gradient on this micro-step.
        window_start: Zero gradients before this micro-step.
        window_end: Reduce, clip and step after this micro-step (gradient sync on).
        create_ema: Create the EMA shadow after this micro-step (once).
    """

    raw_step: int
    optimizer_step: int
    micro_index: int
    train_generator: bool
    window_start: bool
    window_end: bool
    create_ema: bool


@dataclass(frozen=True, slots=True)
class TrainSchedule:
    """Maps raw micro-steps to optimizer actions.

    Attributes:
        num_optimizer_steps: Critic optimizer steps of the run.
        grad_accum_steps: Micro-steps per optimizer step.
        gen_update_every: Generator windows are those with ``optimizer_step % this == 0``.
        ema_start_raw_step: Raw step count at which the EMA shadow is created.
    """

    num_optimizer_steps: int
    grad_accum_steps: int
    gen_update_every: int
    ema_start_raw_step: int

    def __post_init__(self) -> None:
        for name in ("num_optimizer_steps", "grad_accum_steps", "gen_update_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name}={getattr(self, name)} must be >= 1")

    @property
    def total_raw_steps(self) -> int:
        """Number of micro-steps of the whole run."""
        return self.num_optimizer_steps * self.grad_accum_steps

    def is_generator_window(self, optimizer_step: int) -> bool:
        """True when optimizer step ``optimizer_step`` also steps the generator."""
        return optimizer_step % self.gen_update_every == 0

    def micro(self, raw_step: int) -> MicroStep:
        """The actions of raw micro-step ``raw_step``.

        Raises:
            ValueError: ``raw_step`` outside ``[0, total_raw_steps)``.
        """
        if not 0 <= raw_step < self.total_raw_steps:
            raise ValueError(f"raw_step={raw_step} outside [0, {self.total_raw_steps})")
        opt, idx = divmod(raw_step, self.grad_accum_steps)
        return MicroStep(
            raw_step=raw_step,
            optimizer_step=opt,
            micro_index=idx,
            train_generator=self.is_generator_window(opt),
            window_start=idx == 0,
            window_end=idx == self.grad_accum_steps - 1,
            create_ema=raw_step + 1 == max(self.ema_start_raw_step, 1),
        )

    def iter_from(self, raw_step: int = 0) -> Iterator[MicroStep]:
        """Micro-steps from ``raw_step`` (a window start when resuming) to the end of the run."""
        for r in range(raw_step, self.total_raw_steps):
            yield self.micro(r)
