"""The architectures of the reference reports, rebuilt so they can be compared side by side.

They are fixed to CIFAR-sized inputs as the reports were; `conv2` and `conv4` shrink 32 -> 28
with unpadded convolutions and so only fit pipelines whose output is 4 pixels smaller.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .registry import register_model


def _check_shrink(name, in_shape, out_shape, by):
    if out_shape[1] != in_shape[1] - by or out_shape[2] != in_shape[2] - by:
        raise ValueError(f"{name} maps {in_shape[1]}x{in_shape[2]} to "
                         f"{in_shape[1] - by}x{in_shape[2] - by}, but the pipeline gives "
                         f"{out_shape[1]}x{out_shape[2]}")


@register_model("conv2")
def conv2(in_shape=(3, 32, 32), out_shape=(1, 28, 28)) -> nn.Module:
    """Report 000: Conv 3->16 3x3 + ReLU, Conv 16->1 3x3, no padding."""
    _check_shrink("conv2", in_shape, out_shape, 4)
    return nn.Sequential(nn.Conv2d(in_shape[0], 16, 3), nn.ReLU(), nn.Conv2d(16, out_shape[0], 3))


@register_model("fc")
def fc(in_shape=(3, 32, 32), out_shape=(1, 28, 28)) -> nn.Module:
    """Report 002's first model: Flatten, Linear 3072->128, Linear 128->784, Sigmoid."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), 128),
                         nn.Linear(128, math.prod(out_shape)), nn.Sigmoid(), nn.Unflatten(1, out_shape))


@register_model("conv4")
def conv4(in_shape=(3, 32, 32), out_shape=(1, 28, 28), dropout: float = 0.2) -> nn.Module:
    """Report 002's CNN: four 4x4 convolutions 3->64->64->64->1 (padding 1: -1 px each), ReLU, Dropout 0.2."""
    _check_shrink("conv4", in_shape, out_shape, 4)
    return nn.Sequential(
        nn.Conv2d(in_shape[0], 64, 4, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 4, padding=1), nn.ReLU(), nn.Dropout(dropout),
        nn.Conv2d(64, 64, 4, padding=1), nn.ReLU(), nn.Dropout(dropout),
        nn.Conv2d(64, out_shape[0], 4, padding=1))


class ConvPool(nn.Module):
    """Report 003: Conv 3->32, Conv 32->64 (3x3), LeakyReLU, 2x max-pool, fully-connected
    layers to the output; inputs normalised inside, linear layers Xavier-initialised."""

    def __init__(self, in_shape=(3, 32, 32), out_shape=(1, 28, 28), hidden: int = 1024):
        super().__init__()
        c, h, w = in_shape
        self.out_shape = tuple(out_shape)
        self.register_buffer("mean", torch.full((1, c, 1, 1), 0.5))
        self.register_buffer("std", torch.full((1, c, 1, 1), 0.25))
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.LeakyReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.LeakyReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * (h // 2) * (w // 2), hidden), nn.LeakyReLU(),
                                  nn.Linear(hidden, math.prod(out_shape)))
        for layer in self.head:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x):
        x = (x - self.mean) / self.std
        return self.head(self.features(x)).view(-1, *self.out_shape)


@register_model("convpool")
def convpool(in_shape=(3, 32, 32), out_shape=(1, 28, 28), hidden: int = 1024) -> nn.Module:
    return ConvPool(in_shape, out_shape, hidden)
