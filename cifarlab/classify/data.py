"""The labelled images a classification run trains, validates and tests on."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import ImageSet, load_images, validation_split
from ..errors import CifarlabError


@dataclass
class ClassifyData:
    pool: ImageSet               # the training pool (train + val), uint8
    train_index: torch.Tensor
    val_index: torch.Tensor
    test: ImageSet | None        # a real test split when the source has one (cifar10, train/ + test/)

    @property
    def classes(self) -> list[str]:
        return self.pool.classes

    def split(self, which: str) -> ImageSet:
        return self.pool.subset(self.train_index if which == "train" else self.val_index)

    def evaluation_set(self) -> tuple[ImageSet, str]:
        """The test split when there is one, else the held-out validation split."""
        return (self.test, "test") if self.test is not None else (self.split("val"), "held-out validation")


def require_labels(images: ImageSet, data: str) -> ImageSet:
    if images.labels is None or not images.classes:
        if data == "cifar10":
            hint = "CIFAR-10 is not available here (see the warning) and its fallback 'sample' has no labels"
        elif images.name.startswith("sample"):
            hint = "'sample' is unlabelled photo crops"
        else:
            hint = f"{data!r} is a flat folder of images (no class subfolders)"
        raise CifarlabError(f"classification needs labelled images, and {hint}: use --data cifar10 or an "
                            f"ImageFolder tree (one subfolder per class, e.g. cat/001.png)")
    if len(images.classes) < 2:
        raise CifarlabError(f"classification needs at least 2 classes, {data!r} has {len(images.classes)}")
    return images


def load_labelled(data: str, split: str = "train", root=None) -> ImageSet:
    return require_labels(load_images(data, split, root), data)


def prepare_data(data: str, data_root=None, val_fraction: float = 0.1, seed: int = 0) -> ClassifyData:
    pool = load_labelled(data, "train", data_root)
    train_index, val_index = validation_split(len(pool), val_fraction, seed)
    test = None
    if data == "cifar10" and pool.name == "cifar10-train":
        test = load_labelled(data, "test", data_root)
    elif data != "cifar10" and (Path(data) / "train").is_dir() and (Path(data) / "test").is_dir():
        test = load_labelled(data, "test", data_root)
    if test is not None and test.classes != pool.classes:
        raise CifarlabError(f"the test split's classes {test.classes} differ from the training classes {pool.classes}")
    return ClassifyData(pool, train_index, val_index, test)


def kfold_indices(n: int, folds: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`folds` seeded (train_index, val_index) pairs; the val parts are disjoint and cover 0..n-1."""
    if folds < 2:
        raise CifarlabError(f"--folds must be at least 2 for cross-validation, got {folds}")
    if folds > n:
        raise CifarlabError(f"--folds {folds} is more than the {n} images: each fold needs one image")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts = torch.tensor_split(perm, folds)
    return [(torch.cat([p for j, p in enumerate(parts) if j != i]).sort().values, parts[i].sort().values)
            for i in range(folds)]
