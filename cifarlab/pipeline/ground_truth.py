"""Ground truth: the pipeline applied to whole batches, cached per (images, pipeline)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from ..io import torch_save
from .pipeline import Pipeline


def cache_dir() -> Path:
    return Path(os.environ.get("CIFARLAB_CACHE", Path.home() / ".cache" / "cifarlab"))


def images_key(images: torch.Tensor) -> str:
    """A content hash of the images, so a cache entry can never belong to other data."""
    h = hashlib.sha1(str(tuple(images.shape)).encode() + str(images.dtype).encode())
    h.update(images.contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def ground_truth(images: torch.Tensor, pipeline: Pipeline, cache: bool = True,
                 chunk: int = 16384) -> torch.Tensor:
    """Float images (N, C, H, W) in [0, 1] -> pipeline outputs, computed in large batches.

    With ``cache`` the result is kept under ``$CIFARLAB_CACHE/ground-truth`` keyed by the
    image content and the pipeline (including torchvision's version)."""
    path = cache_dir() / "ground-truth" / f"{images_key(images)}-{pipeline.key()}.pt"
    if cache and path.exists():
        try:
            cached = torch.load(path, weights_only=True)
            if cached.shape[0] == images.shape[0]:
                return cached
        except Exception:
            pass  # a damaged cache entry is recomputed and overwritten
    with torch.inference_mode():
        out = torch.cat([pipeline(images[i:i + chunk]) for i in range(0, len(images), chunk)])
    out = out.clone().contiguous()
    if cache:
        try:
            torch_save(out, path)
        except OSError:
            pass  # a read-only cache only costs a recomputation
    return out
