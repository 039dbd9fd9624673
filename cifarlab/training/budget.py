"""The one rule for how long a run trains, shared by `transform train` and `classify train`.

A time budget the user gives is a promise to spend it:

- ``--time-budget`` without ``--epochs``: the clock is the limit. No epoch cap ends the run,
  the schedule follows the clock (`schedules.run_progress`) and anneals as the budget runs out,
  and early stopping is off unless the user asks for it (``--patience``).
- ``--epochs`` (with or without a budget): a cap; with both, whichever comes first.
- neither: the command's default number of epochs.

A budget that ends before the first epoch finishes is an error: there is nothing worth saving.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import CifarlabError


@dataclass(frozen=True)
class Limits:
    epochs: int | None          # None: no epoch cap, the clock rules
    time_budget: float | None   # seconds of training steps, across resumes

    @classmethod
    def of(cls, epochs: int | None, time_budget: float | None, default_epochs: int) -> "Limits":
        if epochs is None and time_budget is None:
            epochs = default_epochs
        return cls(epochs, time_budget)

    @property
    def clock_only(self) -> bool:
        return self.epochs is None

    def epochs_left(self, epochs_done: int) -> bool:
        return self.epochs is None or epochs_done < self.epochs

    def planned_steps(self, steps_per_epoch: int) -> int | None:
        return None if self.epochs is None else steps_per_epoch * self.epochs

    def describe(self) -> str:
        """For the run's first line: which limit is in force."""
        if self.epochs is None:
            return f"limit: the clock, {self.time_budget:g} s of training (no epoch cap)"
        if self.time_budget is None:
            return f"limit: {self.epochs} epochs"
        return f"limits: {self.epochs} epochs or {self.time_budget:g} s, whichever comes first"


def check_time_budget(seconds: float | None) -> None:
    """A budget is a finite positive number of seconds: an infinite one never anneals the schedule."""
    if seconds is not None and not (0 < seconds < math.inf):
        raise CifarlabError(f"--time-budget must be a finite positive number of seconds, got {seconds:g}")


class BudgetEndedInFirstEpoch(CifarlabError):
    """The budget ran out before one epoch finished (a search's short rung may accept that)."""


def require_a_whole_epoch(steps_done: int, steps_per_epoch: int, seconds: float, time_budget: float) -> None:
    """The error for a budget that ended inside the first epoch (see the module docstring)."""
    if steps_done >= steps_per_epoch:
        return
    estimate = seconds * steps_per_epoch / max(1, steps_done)
    raise BudgetEndedInFirstEpoch(f"--time-budget {time_budget:g} s ended before the first epoch finished ({steps_done} of "
                        f"{steps_per_epoch} steps): nothing was saved; an epoch takes about {estimate:.3g} s here, "
                        f"so raise --time-budget")
