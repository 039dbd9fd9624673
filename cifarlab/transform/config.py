"""Everything that defines a transform run; saved as config.json so a run can be rebuilt."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from ..configs import RunConfig
from ..errors import CifarlabError
from ..models import model_builder
from ..pipeline import DEFAULT_PIPELINE, Pipeline
from ..training.loggers import LOGGERS
from ..training.budget import Limits, check_time_budget
from ..training.losses import LOSSES

SCHEDULES = ("auto", "none", "cosine", "plateau")
# The schedule of a run whose only limit is the clock (--time-budget without --epochs), chosen
# by held-out PSNR in 60 s runs (docs/transform-learnability.md); other runs keep a constant rate.
BUDGET_SCHEDULE = "plateau"
INITS = ("auto", "random", "exact")
DEFAULT_EPOCHS, DEFAULT_PATIENCE = 100, 5
MONITORS = ("val", "train")


@dataclass
class TransformConfig(RunConfig):
    kind: ClassVar[str] = "transform"
    data: str = "cifar10"               # cifar10 | sample | a folder of images
    data_root: str | None = None        # where CIFAR-10 is cached (default ~/.cache/cifarlab/data)
    pipeline: str = DEFAULT_PIPELINE
    model: str = "sepnet"
    model_args: dict = field(default_factory=dict)
    init: str = "auto"                  # auto | random | exact (auto: the probed operator where sepnet holds it)
    loss: str = "mse"
    lr: float = 1e-3
    batch_size: int = 32
    epochs: int | None = None          # None: DEFAULT_EPOCHS, or no cap under --time-budget (training.budget)
    time_budget: float | None = None    # seconds of training, across resumes
    schedule: str = "auto"              # auto: BUDGET_SCHEDULE under a clock-only budget, else none
    patience: int | None = None        # None: DEFAULT_PATIENCE, or off under --time-budget
    min_delta: float = 0.0
    monitor: str = "val"
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"
    threads: int | None = None          # CPU threads for torch (None: torch's default)
    logger: str = "tensorboard"
    bench: bool = False                 # run the inference benchmark after training (cifarlab run)

    def validate(self) -> "TransformConfig":
        def need(ok, message):
            if not ok:
                raise CifarlabError(message)
        need(self.lr > 0 and math.isfinite(self.lr), f"--lr must be a positive number, got {self.lr}")
        need(self.batch_size >= 1, f"--batch-size must be a positive integer, got {self.batch_size}")
        need(self.epochs is None or self.epochs >= 1, f"--epochs must be a positive integer, got {self.epochs}")
        check_time_budget(self.time_budget)
        need(self.patience is None or self.patience >= 1, f"--patience must be a positive integer, got {self.patience}")
        need(self.threads is None or self.threads >= 1, f"--threads must be a positive integer, got {self.threads}")
        need(0 <= self.min_delta < math.inf, f"--min-delta must be a finite number >= 0, got {self.min_delta:g}")
        need(0 < self.val_fraction < 1, f"--val-fraction must be between 0 and 1, got {self.val_fraction}")
        need(self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        need(self.monitor in MONITORS, f"--monitor must be one of {', '.join(MONITORS)}, got {self.monitor!r}")
        need(self.init in INITS, f"--init must be one of {', '.join(INITS)}, got {self.init!r}")
        need(self.loss in LOSSES, f"unknown loss {self.loss!r}; valid losses: {', '.join(LOSSES)}")
        need(self.logger in LOGGERS, f"unknown logger {self.logger!r}; valid loggers: {', '.join(LOGGERS)}")
        model_builder(self.model)       # unknown names fail here, before any data is loaded
        Pipeline.parse(self.pipeline)
        return self

    def limits(self) -> Limits:
        return Limits.of(self.epochs, self.time_budget, DEFAULT_EPOCHS)

    def resolved_schedule(self) -> str:
        """--schedule, with auto settled: a budgeted run must lower its rate before the clock ends."""
        if self.schedule != "auto":
            return self.schedule
        return BUDGET_SCHEDULE if self.limits().clock_only else "none"

    def early_stopping_patience(self) -> int | None:
        """--patience when given; otherwise off for a budgeted run (it spends its budget), else 5."""
        if self.patience is not None:
            return self.patience
        return None if self.time_budget is not None else DEFAULT_PATIENCE

