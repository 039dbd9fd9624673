"""Early stopping on a monitored loss; the caller keeps the best weights when `improved`."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class EarlyStopping:
    patience: int | None = 5    # None: never stops (it still tracks the best)
    min_delta: float = 0.0
    best: float = math.inf
    bad_epochs: int = 0

    def step(self, value: float) -> bool:
        """Record one epoch's loss; True when it improved on the best by more than min_delta."""
        if value < self.best - self.min_delta:
            self.best, self.bad_epochs = value, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        """The progress of a saved run; the patience stays the one this run was built with."""
        for key, value in state.items():
            if key != "patience":
                setattr(self, key, value)
