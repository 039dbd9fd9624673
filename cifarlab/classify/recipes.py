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
- ``fast``: our record-class recipe for small budgets, after airbench's method: a data-whitened
  2x2 first convolution, conv-pool-BN-GELU groups, label smoothing 0.2, reflect-translate by 2 px
  and mirror as batched tensor ops on the device, Nesterov SGD with a one-cycle schedule that
  follows the clock under --time-budget, test-time mirror averaging. Widths and batch are sized
  for CPU throughput (see BENCHMARKS.md).
- ``airbench94``: airbench94's network size (64-256-256) and hyperparameters translated to this
  loop (batch 1024, Nesterov SGD with momentum 0.85, BN-shift learning rate x64, ~10 epochs), as
  the reference the ``fast`` recipe is measured against.
"""
from __future__ import annotations

from dataclasses import fields

from ..errors import CifarlabError
from .config import ClassifyConfig

RECIPES: dict[str, dict] = {
    "baseline": dict(model="baseline_cnn", model_args={}, optimizer="adam", lr=0.002, weight_decay=0.0,
                     bias_lr_scale=1.0, batch_size=50, epochs=10, schedule="none", label_smoothing=0.0,
                     augment="none", tta=False, channels_last=False),
    "seed004": dict(model="deep_cnn", model_args={"activation": "leaky_relu"}, optimizer="adam", lr=1e-3,
                    weight_decay=0.0, bias_lr_scale=1.0, batch_size=64, epochs=30, schedule="plateau",
                    label_smoothing=0.0, augment="crop:4,flip,rotate:15", tta=False, channels_last=False),
    "fast": dict(model="fastnet", model_args={"widths": "24-48-96"}, optimizer="sgd", lr=0.8, momentum=0.85,
                 weight_decay=5e-4, bias_lr_scale=16.0, batch_size=256, epochs=20, schedule="onecycle",
                 warmup=0.2, label_smoothing=0.2, augment="crop:2,flip", tta=True, channels_last=True),
    "airbench94": dict(model="fastnet", model_args={"widths": "64-256-256"}, optimizer="sgd", lr=1.5,
                       momentum=0.85, weight_decay=1.3e-3, bias_lr_scale=64.0, batch_size=1024, epochs=10,
                       schedule="onecycle", warmup=0.23, label_smoothing=0.2, augment="crop:2,flip", tta=True,
                       channels_last=False),
}
DEFAULT_RECIPE = "fast"


def recipe_config(name: str, **given) -> ClassifyConfig:
    """The recipe's settings, overridden by every `given` value that is not None."""
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
    return ClassifyConfig(**values).validate()
