"""Fixtures: a tiny labelled ImageFolder tree, and one tiny trained run."""
from pathlib import Path

import pytest


@pytest.fixture
def tiny_folder(tmp_path, make_folder) -> Path:
    return make_folder(tmp_path / "tiny")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, make_folder) -> Path:
    """One tiny baseline run shared by the artifact, eval and predict tests."""
    from cifarlab.classify import recipe_config, train
    root = tmp_path_factory.mktemp("classify")
    data = make_folder(root / "data")
    config = recipe_config("baseline", data=str(data), epochs=2, logger="none", batch_size=8)
    return train(config, out=str(root / "run"), quiet=True)
