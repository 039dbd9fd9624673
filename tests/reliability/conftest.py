"""Fixtures: one tiny transform run and one tiny classify run, trained once, and a sandbox
holding fresh copies of them (and of their data) for each test to damage."""
import shutil
from pathlib import Path

import pytest


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
