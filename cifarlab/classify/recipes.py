"""Named training recipes: documented presets over the ordinary options.

A recipe fills every option the user did not give; anything given on the command line wins.
A recipe's epochs are its length when no budget is given: with ``--time-budget`` and no
``--epochs`` the run spends the whole budget (cifarlab.training.budget). No recipe stops early
by design; ``--patience`` asks for early stopping.

- ``baseline``: the reference report's first model: 2 convolutions into 1 linear layer
  (~23 k parameters), ReLU, Adam lr 0.002, batch 50, 10 epochs, normalised data, no augmentation.
- ``seed004``: the report's final training: the deep CNN 3-64-128-256-512-1024 (BN, max-pool,
  dropout, global average pooling), LeakyReLU, crop/flip/rotate augmentation, Adam 1e-3,
  ReduceLROnPlateau, 30 epochs.
- ``fast``: our recipe for small budgets: airbench94's network and training method (below) at
  widths 32-128-128 and batch 128, sized for CPU throughput, with a larger learning rate per image
  (0.4 at batch 128: 2.1x airbench's), a 4 px translate, and torchvision's RandAugment (2 ops,
  magnitude 9) on every training image: on 4,577 images a Zen 4 run is limited by its data more
  than by its steps (a Zen 3 run without bfloat16 is short of steps, and RandAugment still paid
  there); with it (and bfloat16) the seeded 240 s table went from 81.6% to 82.5%, and to 83.3%
  over fourteen 240 s runs once the policy ran in groups. Progressive resizing (24x24 for
  the first half of the run) fits ~25% more epochs in a budget: +0.6 points (best epoch) and +0.9
  (final network) over five 240 s runs each, within noise. What each change was worth, and the
  table against airbench94 at 60/120/240 s: BENCHMARKS.md ("fast against airbench94").
  Since 2026-11-29 its convolution filters train with Muon (airbench94_muon's split, muon.py) at
  lr 0.1 and the shifts and head with the SGD above: on the Zen 3 that gained on every seed at every
  budget (68.8 -> 71.7% at 60 s, 76.2 -> 79.1% at 120 s, 80.8 -> 82.2% at 240 s); airbench's 0.24
  tied at 240 s. The Zen 4 rows in the README were measured with SGD and not again since.
- ``airbench94``: airbench94's method (KellerJordan/cifar10-airbench, legacy/airbench94.py,
  94.0% on CIFAR-10) in cifarlab's parts: its network (fastnet 64-256-256), label smoothing 0.2,
  Nesterov SGD (momentum 0.85) with BatchNorm shifts at 64x the lr and the same per-step weight
  decay, airbench's lr and weight decay in PyTorch's form (below), 23% warm-up from 0.2x then a
  linear fall to 0.07x, lookahead, a whitening bias that learns for 3 epochs, alternating flip
  and 2 px translate, and flip + translate test-time augmentation. Hyperparameters are
  airbench's on full CIFAR-10; on small data `fit_to_data` scales the batch (and, if need be,
  the epochs) and says so.

airbench states lr 11.5 and weight decay 0.0153 "per 1024 examples" for a summed loss, divided by
1024 * (1 + 1 / (1 - momentum)). For cifarlab's mean loss over a batch B that is lr = 1.5 * B / 1024
and weight decay 0.0153 / 11.5 (PyTorch's coupled form, independent of B). airbench trains 9.9
epochs; cifarlab's epochs are whole, so 10 (480 steps on 50,000 images instead of 476; cifarlab
holds out 10% of CIFAR-10's training set for validation, so 430 steps of 1,024 on 45,000).
"""
from __future__ import annotations

import math
import sys
from dataclasses import fields
from pathlib import Path

from ..errors import CifarlabError
from .config import ClassifyConfig

RECIPES: dict[str, dict] = {
    "baseline": dict(model="baseline_cnn", model_args={}, optimizer="adam", lr=0.002, weight_decay=0.0,
                     bias_lr_scale=1.0, batch_size=50, epochs=10, schedule="none", label_smoothing=0.0,
                     augment="none", tta=False, channels_last=False),
    "seed004": dict(model="deep_cnn", model_args={"activation": "leaky_relu"}, optimizer="adam", lr=1e-3,
                    weight_decay=0.0, bias_lr_scale=1.0, batch_size=64, epochs=30, schedule="plateau",
                    label_smoothing=0.0, augment="crop:4,flip,rotate:15", tta=False, channels_last=False),
    "fast": dict(model="fastnet", model_args={"widths": "32-128-128", "tta_translate": 1}, optimizer="muon", lr=0.4,
                 momentum=0.85, muon_lr=0.1, muon_momentum=0.6, weight_decay=5e-4, bias_lr_scale=64.0, batch_size=128,
                 epochs=20, schedule="onecycle",
                 warmup=0.2, label_smoothing=0.2, augment="altflip,crop:4,randaugment:9", progressive="24:0.5",
                 tta=True, channels_last=True, lookahead=True, whiten_bias_epochs=3, final_lr=0.07, shift_params="batchnorm"),
    "airbench94": dict(model="fastnet", model_args={"widths": "64-256-256", "tta_translate": 1}, optimizer="sgd",
                       lr=1.5, momentum=0.85, weight_decay=0.0153 / 11.5, bias_lr_scale=64.0, batch_size=1024,
                       epochs=10, schedule="onecycle", warmup=0.23, label_smoothing=0.2, augment="altflip,crop:2",
                       tta=True, channels_last=True, lookahead=True, whiten_bias_epochs=3, final_lr=0.07,
                       shift_params="batchnorm"),
}
DEFAULT_RECIPE = "fast"


# ----------------------------------------------------------------------------- small data

MIN_STEPS_PER_EPOCH = {"airbench94": 32}   # full CIFAR-10 gives airbench 43-48 steps of 1024
SMALLEST_BATCH = 64                         # BatchNorm statistics need a batch
FULL_BATCH_LR = {"airbench94": (1024, 1.5)}  # lr per batch: airbench's lr is per example


def count_training_images(data: str, val_fraction: float) -> int | None:
    """How many images a run on `data` trains on (pool minus the validation split), from file
    names alone; None when that cannot be told cheaply (the loader reports real errors later)."""
    from ..data.sources import IMAGE_SUFFIXES
    if data == "cifar10":
        pool = 50_000
    else:
        folder = Path(data)
        if not folder.is_dir():
            return None
        if (folder / "train").is_dir() and (folder / "test").is_dir():
            folder = folder / "train"
        pool = sum(1 for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if pool < 2 or not 0 < val_fraction < 1:
        return None
    return pool - min(max(1, round(pool * val_fraction)), pool - 1)


def fit_to_data(name: str, values: dict, given: dict, train_images: int) -> str | None:
    """The small-data rule: an epoch keeps at least MIN_STEPS_PER_EPOCH steps. The batch halves
    from the recipe's (never below SMALLEST_BATCH) until it does, and the lr follows the batch
    (airbench's lr is per example); if even the smallest batch leaves fewer steps, the epochs
    grow so the run keeps as many steps as the recipe's epochs of the minimum would. Anything
    the user gave wins. Returns the one line saying what changed, or None."""
    min_steps = MIN_STEPS_PER_EPOCH.get(name)
    if min_steps is None:
        return None
    changes = []
    if given.get("batch_size") is None:
        batch = values["batch_size"]
        while batch > SMALLEST_BATCH and train_images // batch < min_steps:
            batch //= 2
        if batch != values["batch_size"]:
            changes.append(f"batch {values['batch_size']} -> {batch}")
            values["batch_size"] = batch
    if given.get("lr") is None and values["batch_size"] != FULL_BATCH_LR[name][0]:
        full_batch, full_lr = FULL_BATCH_LR[name]
        lr = full_lr * values["batch_size"] / full_batch
        changes.append(f"lr {values['lr']:g} -> {lr:g} (airbench's lr per image)")
        values["lr"] = lr
    steps = max(1, train_images // min(values["batch_size"], train_images))
    if given.get("epochs") is None and values["epochs"] is not None and steps < min_steps:
        epochs = math.ceil(values["epochs"] * min_steps / steps)
        changes.append(f"epochs {values['epochs']} -> {epochs} (keeps {values['epochs'] * min_steps} steps)")
        values["epochs"] = epochs
    if not changes:
        return None
    return (f"recipe {name} on {train_images:,} training images (fewer than {min_steps} steps an epoch at its "
            f"batch): {', '.join(changes)}; {max(1, train_images // values['batch_size'])} steps an epoch")


_said: set[str] = set()


def _say_once(line: str) -> None:
    """Search builds the same config many times; the user needs the line once."""
    if line not in _said:
        _said.add(line)
        print(line, file=sys.stderr)


def recipe_config(name: str, **given) -> ClassifyConfig:
    """The recipe's settings, overridden by every `given` value that is not None, fitted to the
    size of the data where the recipe has a small-data rule (`fit_to_data`)."""
    if name not in RECIPES:
        raise CifarlabError(f"unknown recipe {name!r}; valid recipes: {', '.join(RECIPES)}")
    known = {f.name for f in fields(ClassifyConfig)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise CifarlabError(f"unknown setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    values = {**RECIPES[name], **{k: v for k, v in given.items() if v is not None}, "recipe": name}
    if given.get("time_budget") is not None and given.get("epochs") is None:
        values["epochs"] = None  # a budget without --epochs: the clock is the limit, not the recipe's epochs
    if "model" in given and given["model"] is not None and given["model"] != RECIPES[name]["model"] \
            and given.get("model_args") is None:
        values["model_args"] = {}  # the recipe's widths belong to the recipe's model
    train_images = count_training_images(values.get("data", "cifar10"), values.get("val_fraction", 0.1))
    if train_images is not None:
        line = fit_to_data(name, values, given, train_images)
        if line:
            _say_once(line)
    return ClassifyConfig(**values).validate()
