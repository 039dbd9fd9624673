"""Everything that defines a classification run; saved as config.json so a run can be rebuilt."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from ..configs import RunConfig
from ..errors import CifarlabError
from ..training.budget import Limits, check_time_budget

OPTIMIZERS = ("adam", "adamw", "sgd", "muon")  # sgd is always Nesterov; muon: filters by Muon, the rest sgd
SCHEDULES = ("none", "plateau", "onecycle", "cosine")
SHIFT_PARAMS = ("1-d", "batchnorm")            # what --bias-lr-scale speeds up
DEFAULT_EPOCHS = 30
METHOD_SETTINGS = ("final_lr", "shift_params", "whiten_bias_epochs", "lookahead")   # newer than some runs


def parse_progressive(spec: str | None) -> tuple[int, float] | None:
    """Progressive resizing: '24:0.5' -> (24, 0.5), train on images downscaled to 24x24 for the
    first half of the run (by the schedule's progress), then on the full 32x32; 'none' -> None."""
    if spec in (None, "", "none"):
        return None
    size, colon, share = str(spec).partition(":")
    try:
        size, share = int(size), float(share)
    except ValueError:
        size = share = None
    if not colon or size is None or not 8 <= size < 32 or not 0 < share < 1:
        raise CifarlabError(f"--progressive must be SIZE:SHARE with SIZE a whole number of pixels from 8 to 31 "
                            f"and SHARE of the run between 0 and 1 (e.g. 24:0.5), or none; got {spec!r}")
    return size, share


@dataclass
class ClassifyConfig(RunConfig):
    kind: ClassVar[str] = "classify"
    recipe: str = "fast"                # the preset the other values came from (recipes.py)
    data: str = "cifar10"               # cifar10 | a folder (ImageFolder tree); 'sample' has no labels
    data_root: str | None = None
    val_fraction: float = 0.1           # seeded hold-out from the training pool
    model: str = "fastnet"
    model_args: dict = field(default_factory=dict)
    pretrained: bool = False            # resnet18_tv from ImageNet weights
    optimizer: str = "sgd"
    lr: float = 0.2
    momentum: float = 0.85              # sgd only (and muon's sgd part)
    muon_lr: float = 0.1                # muon: the filters' lr, a share of their norm a step (airbench94_muon:
    #                                     0.24 for 200 steps of 2,000; 0.1 measured better at 240 s of batch 128)
    muon_momentum: float = 0.6          # muon: the filters' Nesterov momentum (airbench94_muon's)
    weight_decay: float = 5e-4
    bias_lr_scale: float = 1.0          # BatchNorm shifts learn this much faster (airbench: 64)
    batch_size: int = 256
    epochs: int | None = 30             # None with --time-budget: no cap, the clock rules (training.budget)
    time_budget: float | None = None    # seconds of training steps (evaluation excluded), across resumes
    schedule: str = "onecycle"          # onecycle and cosine follow the clock when --time-budget is set
    warmup: float = 0.2                 # onecycle: share of the run spent warming up
    final_lr: float = 0.0               # onecycle ends at this share of --lr (airbench94: 0.07)
    shift_params: str = "1-d"           # what learns bias_lr_scale x faster: every 1-D parameter, or only
    #                                     BatchNorm shifts ("batchnorm", airbench's split)
    whiten_bias_epochs: int | None = None  # fastnet's whitening bias learns this many epochs, then stops
    lookahead: bool = False             # airbench's lookahead: a slow copy of the weights (trainer.Lookahead)
    label_smoothing: float = 0.2
    augment: str = "crop:2,flip"        # see augment.py
    progressive: str = "none"           # "SIZE:SHARE": train on SIZE x SIZE images for that share of the run
    tta: bool = True                    # average the logits of the image and its mirror
    patience: int = 1000                # early stopping on validation accuracy (epochs)
    min_delta: float = 0.0
    amp: bool = True                    # bfloat16 autocast on CUDA and CPUs with native bfloat16 (devices.native_bfloat16)
    channels_last: bool = False
    seed: int = 0
    device: str = "auto"
    threads: int = 0                    # torch CPU threads; 0 = torch's default
    logger: str = "tensorboard"

    def validate(self) -> "ClassifyConfig":
        def need(ok, message):
            if not ok:
                raise CifarlabError(message)
        need(self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        need(self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        need(self.lr > 0 and math.isfinite(self.lr), f"--lr must be a positive number, got {self.lr}")
        need(0 <= self.weight_decay < math.inf, f"--weight-decay must be a finite number >= 0, got {self.weight_decay:g}")
        need(0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}")
        need(self.muon_lr > 0 and math.isfinite(self.muon_lr), f"--muon-lr must be a positive number, got {self.muon_lr}")
        need(0 <= self.muon_momentum < 1, f"--muon-momentum must be in [0, 1), got {self.muon_momentum}")
        need(not (self.optimizer == "muon" and self.schedule == "plateau"),
             "--schedule plateau works with adam, adamw and sgd, not muon: pick onecycle, cosine or none")
        need(self.batch_size >= 1, f"--batch-size must be a positive integer, got {self.batch_size}")
        need(self.epochs is None or self.epochs >= 1, f"--epochs must be a positive integer, got {self.epochs}")
        check_time_budget(self.time_budget)
        need(0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        need(0 <= self.warmup < 1, f"--warmup must be in [0, 1), got {self.warmup}")
        need(0 <= self.final_lr < 1, f"--final-lr must be in [0, 1), got {self.final_lr}")
        need(self.shift_params in SHIFT_PARAMS,
             f"shift_params must be one of {', '.join(SHIFT_PARAMS)}, got {self.shift_params!r}")
        need(self.whiten_bias_epochs is None or self.whiten_bias_epochs >= 0,
             f"whiten_bias_epochs must be >= 0 or null, got {self.whiten_bias_epochs}")
        need(self.patience >= 1, f"--patience must be a positive integer, got {self.patience}")
        need(0 < self.val_fraction < 1, f"--val-fraction must be between 0 and 1, got {self.val_fraction}")
        need(self.threads >= 0, f"--threads must be >= 0, got {self.threads}")
        from ..models import classifiers  # noqa: F401  (registers the classifiers)
        from ..models.registry import model_builder
        from .augment import parse_augment
        self.limits()
        model_builder(self.model, "classify")  # unknown names fail early, listing the valid ones
        parse_augment(self.augment)
        parse_progressive(self.progressive)
        return self

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "ClassifyConfig":
        """A config.json written before the training-method settings existed: only airbench94
        used them then (from its recipe), so such a run resumes as it was trained."""
        from .recipes import RECIPES
        if isinstance(data, dict) and data.get("recipe") == "airbench94":
            data = {**{k: v for k, v in RECIPES["airbench94"].items() if k in METHOD_SETTINGS}, **data}
        return super().from_dict(data, source)

    def limits(self) -> Limits:
        return Limits.of(self.epochs, self.time_budget, DEFAULT_EPOCHS)

