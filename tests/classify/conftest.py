"""Fixtures: tiny labelled ImageFolder trees written on the fly, and one tiny trained run."""
from pathlib import Path

import pytest
import torch
import torchvision


def write_folder(root: Path, classes=("cat", "dog", "ship"), per_class: int = 12, size: int = 32,
                 seed: int = 0) -> Path:
    """Class c's images are tinted towards colour c, so even one epoch learns something."""
    g = torch.Generator().manual_seed(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = torch.randint(0, 120, (3, size, size), generator=g, dtype=torch.uint8)
            image[c % 3] += 120
            torchvision.io.write_png(image, str(root / name / f"{i:03d}.png"))
    return root


@pytest.fixture
def make_folder():
    return write_folder


@pytest.fixture
def tiny_folder(tmp_path) -> Path:
    return write_folder(tmp_path / "tiny")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One tiny baseline run shared by the artifact, eval and predict tests."""
    from cifarlab.classify import recipe_config, train
    root = tmp_path_factory.mktemp("classify")
    data = write_folder(root / "data")
    config = recipe_config("baseline", data=str(data), epochs=2, logger="none", batch_size=8)
    return train(config, out=str(root / "run"), quiet=True)
