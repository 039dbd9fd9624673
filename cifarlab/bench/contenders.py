"""The contenders: each builds a callable that makes one full pass over the workload.

Every pass discards its outputs batch by batch (as the reference protocol does), so no
contender holds more than the workload plus one batch of outputs.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.utils.data import DataLoader, TensorDataset

Pass = Callable[[], None]


def per_image(images: torch.Tensor, transform) -> Pass:
    """The reference baseline: the transform applied to each (C, H, W) image in a Python loop."""
    def run():
        for image in images:
            transform(image)
    return run


def sliced(images: torch.Tensor, batch_size: int, device: torch.device, fn) -> Pass:
    """Our own loop: slice the resident tensor (no collation) and move each batch to `device`
    (a no-op when the images already live there)."""
    def run():
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                fn(images[start:start + batch_size].to(device, non_blocking=False))
    return run


def reference_loader(images: torch.Tensor, batch_size: int, device: torch.device, model=None) -> Pass:
    """The reference protocol: a DataLoader over a TensorDataset, each batch moved to the
    device and, when `model` is given, run through it under no_grad."""
    loader = DataLoader(TensorDataset(images), batch_size=batch_size, shuffle=False)

    def run():
        with torch.no_grad():
            for (batch,) in loader:
                batch = batch.to(device)
                if model is not None:
                    model(batch)
    return run


def squared_error(model, images: torch.Tensor, targets: torch.Tensor, batch_size: int,
                  device: torch.device) -> float:
    """Sum of squared errors of `model` over the workload, accumulated batch by batch."""
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            out = model(images[start:start + batch_size].to(device)).float().cpu()
            total += float((out.double() - targets[start:start + batch_size].double()).pow(2).sum())
    return total
