"""Shared fixtures: the real-image subset beside the project (skipped when absent)."""
from pathlib import Path

import pytest
import torch

# Tests check answers, not speed; one thread avoids OpenMP spin-waits when the 2 cores are shared.
torch.set_num_threads(1)

SHARED_SUBSET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-train-subset"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def subset_path() -> Path:
    if not SHARED_SUBSET.is_dir():
        pytest.skip("../shared/data/cifar10-train-subset is not here")
    return SHARED_SUBSET
