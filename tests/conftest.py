"""Shared fixtures: the real-image subset beside the project (skipped when absent), tiny
labelled ImageFolder trees written on the fly, and a sandbox of tiny trained runs to damage."""
import shutil
from pathlib import Path

import pytest
import torch

from cifarlab.imagefiles import encode_png

# Tests check answers, not speed; one thread avoids OpenMP spin-waits when the 2 cores are shared.
torch.set_num_threads(1)

# Tests that start several processes of their own (torchrun, search workers, PostgreSQL, Ray, apply
# workers, signals) run one after another on one pytest-xdist worker, beside the in-process tests on
# the other: each keeps the cores it was written for, and the two cores stay busy.
OWN_PROCESSES = {"test_ddp.py", "test_search_postgres.py", "test_ray_engine.py", "test_apply.py", "test_defects.py"}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in OWN_PROCESSES:
            item.add_marker(pytest.mark.xdist_group("own-processes"))


SHARED_SUBSET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-train-subset"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def subset_path() -> Path:
    if not SHARED_SUBSET.is_dir():
        pytest.skip("../shared/data/cifar10-train-subset is not here")
    return SHARED_SUBSET


def write_folder(root: Path, classes=("cat", "dog", "ship"), per_class: int = 12, size: int = 32,
                 seed: int = 0) -> Path:
    """Class c's images are tinted towards colour c, so even one epoch learns something."""
    g = torch.Generator().manual_seed(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = torch.randint(0, 120, (3, size, size), generator=g, dtype=torch.uint8)
            image[c % 3] += 120
            (root / name / f"{i:03d}.png").write_bytes(encode_png(image.numpy()))
    return root


@pytest.fixture(scope="session")
def make_folder():
    return write_folder


@pytest.fixture(scope="session")
def pristine(tmp_path_factory, make_folder) -> Path:
    from cifarlab.classify import recipe_config
    from cifarlab.classify import train as train_classifier
    from cifarlab.transform import TransformConfig
    from cifarlab.transform import train as train_transform
    root = tmp_path_factory.mktemp("pristine")
    data = make_folder(root / "data", per_class=8)
    train_transform(TransformConfig(data=str(data), epochs=2, logger="none"), out=str(root / "T"), quiet=True)
    train_classifier(recipe_config("baseline", data=str(data), epochs=1, logger="none", batch_size=8),
                     out=str(root / "C"), quiet=True)
    return root


@pytest.fixture
def sandbox(pristine, tmp_path) -> Path:
    """tmp_path/{data,T,C}: the data, a transform run and a classify run, free to damage."""
    for name in ("data", "T", "C"):
        shutil.copytree(pristine / name, tmp_path / name)
    return tmp_path


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".cifarlab.lock"}


@pytest.fixture
def snapshot():
    """snapshot(root): every file under `root` (but lock files) with its bytes, to prove nothing changed."""
    return _snapshot
