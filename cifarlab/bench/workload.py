"""The benchmark's workload: the run's test split, tiled to a fixed count so that runs on
small data time the same amount of work as the reference's 10,000 CIFAR-10 test images."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import load_images
from ..errors import CifarlabError
from ..io import read_json
from ..pipeline import Pipeline, ground_truth


@dataclass
class Workload:
    inputs: torch.Tensor    # float32 (N, C, H, W) in [0, 1], contiguous, on the CPU
    stored: torch.Tensor    # the same images as uint8, the form they are stored in
    targets: torch.Tensor   # pipeline(inputs): what every model path is scored against
    pipeline: Pipeline
    data: str               # name of the source split
    unique: int             # distinct images before tiling

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def megabytes(self) -> float:
        return self.inputs.numel() * self.inputs.element_size() / 2**20


def run_config(run_dir: Path, ckpt: dict) -> dict:
    """The run's config.json, or the copy inside its checkpoint."""
    from ..transform.config import TransformConfig
    path = Path(run_dir) / "config.json"
    data, source = (read_json(path), str(path)) if path.exists() else (ckpt.get("config") or {}, "the checkpoint's config")
    return TransformConfig.from_dict(data, source=source).to_dict()


def tile(images: torch.Tensor, count: int) -> torch.Tensor:
    return images[torch.arange(count) % len(images)]


def load_workload(config: dict, pipeline: Pipeline, in_shape, count: int) -> Workload:
    if count < 1:
        raise CifarlabError(f"--images must be a positive integer, got {count}")
    source = load_images(config.get("data", "cifar10"), "test", config.get("data_root"))
    shape = tuple(source.images.shape[1:])
    if shape != tuple(in_shape):
        raise CifarlabError(f"the model takes images of shape {tuple(in_shape)} but the run's test data "
                            f"({source.name}) has shape {shape}")
    unique_inputs = source.float()
    targets = ground_truth(unique_inputs, pipeline)
    del unique_inputs
    stored = tile(source.images, count).contiguous()
    return Workload(stored.float().div_(255), stored, tile(targets, count).contiguous(), pipeline,
                    source.name, len(source))
