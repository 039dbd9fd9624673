"""The tensors a transform run trains and evaluates on: images and their ground truth."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import CifarlabError
from ..data import ImageSet, load_images, validation_split
from ..pipeline import Pipeline, ground_truth


@dataclass
class TransformData:
    pipeline: Pipeline
    images: ImageSet          # the training pool (train + val)
    train_index: torch.Tensor
    val_index: torch.Tensor
    inputs: torch.Tensor      # float (N, C, H, W) in [0, 1]
    targets: torch.Tensor     # pipeline(inputs), computed batched and cached

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(self.inputs.shape[1:])

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return tuple(self.targets.shape[1:])

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        index = self.train_index if which == "train" else self.val_index
        return self.inputs[index], self.targets[index]


def prepare_data(data: str, pipeline: Pipeline, data_root=None, val_fraction: float = 0.1,
                 seed: int = 0) -> TransformData:
    images = load_images(data, "train", data_root)
    pipeline.output_shape(tuple(images.images.shape[1:]))  # fails early, clearly, on impossible pipelines
    inputs = images.float()
    targets = ground_truth(inputs, pipeline)
    if targets.numel() and bool((targets == targets.flatten()[0]).all()):
        raise CifarlabError(f"pipeline {pipeline.spec!r} gives the same output for every image of {images.name}: "
                            f"there is nothing to learn (check the step arguments)")
    train_index, val_index = validation_split(len(images), val_fraction, seed)
    return TransformData(pipeline, images, train_index, val_index, inputs, targets)
