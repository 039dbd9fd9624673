"""Early stopping on a monitored loss; the caller keeps the best weights when `improved`."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class EarlyStopping:
    patience: int = 5
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
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
