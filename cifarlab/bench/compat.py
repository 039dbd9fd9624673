"""`--compat`: the reference reports' `test_inference_time` protocol and printout, line for line.

No warm-up, one pass, wall-clock `time.time()`, no device synchronisation: numbers to
compare with the reference code, not measurements to trust (use the full benchmark).
"""
from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader, TensorDataset

SEQUENTIAL_LINE = "Sequential transforming each image took: {t} on CPU."
MODEL_LINE = "Using a model with batch_size: {bs} took {t} on {device}."


def reference_inference_time(model, images: torch.Tensor, transforms, devices, batch_sizes, echo=print) -> dict:
    """Time `transforms` per image on the CPU, then `model` through a DataLoader per device and batch size."""
    start = time.time()
    for image in images:
        transforms(image)
    sequential = time.time() - start
    echo(SEQUENTIAL_LINE.format(t=sequential))
    timings = {"sequential": sequential, "model": []}
    dataset = TensorDataset(images)
    for device in devices:
        model = model.to(device).eval()
        for batch_size in batch_sizes:
            start = time.time()
            with torch.no_grad():
                for (batch,) in DataLoader(dataset, batch_size=batch_size, shuffle=False):
                    model(batch.to(device))
            took = time.time() - start
            echo(MODEL_LINE.format(bs=batch_size, t=took, device=device.type))
            timings["model"].append({"device": device.type, "batch_size": batch_size, "seconds": took})
    return timings
