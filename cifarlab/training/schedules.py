"""Learning-rate schedules as a share of the base rate at a point of the run.

`progress` runs from 0 to 1 and is the larger of the step fraction and the clock fraction,
so under --time-budget a schedule follows the clock: the cosine reaches zero when the
budget runs out, not at an epoch cap the run will never see.
"""
from __future__ import annotations

import math


def lr_factor(schedule: str, progress: float, warmup: float = 0.0) -> float:
    """The learning rate as a share of --lr at `progress` (0 to 1) through the run."""
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "onecycle":  # linear up from 0.2 to 1 over `warmup`, then linear down to 0
        if progress < warmup:
            return 0.2 + 0.8 * progress / warmup
        return (1 - progress) / (1 - warmup)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0  # none; plateau changes the rate itself


def run_progress(step: int, total_steps: int | None, elapsed: float, time_budget: float | None) -> float:
    """How far through the run: steps done of those planned (None: no step plan, the clock
    alone), or seconds spent of the budget, whichever is further."""
    done = step / max(1, total_steps) if total_steps else 0.0
    if time_budget:
        done = max(done, elapsed / time_budget)
    return done
