import pytest
import torch

from cifarlab.classify.data import kfold_indices
from cifarlab.errors import CifarlabError


@pytest.mark.parametrize("n,folds", [(10, 3), (5085, 3), (7, 7), (100, 5)])
def test_folds_are_disjoint_and_cover_the_data(n, folds):
    splits = kfold_indices(n, folds, seed=0)
    assert len(splits) == folds
    held_out = torch.cat([val for _, val in splits])
    assert sorted(held_out.tolist()) == list(range(n))  # each image held out exactly once
    for train, val in splits:
        assert not set(train.tolist()) & set(val.tolist())
        assert len(train) + len(val) == n


def test_folds_are_seeded():
    a, b, c = kfold_indices(50, 3, 0), kfold_indices(50, 3, 0), kfold_indices(50, 3, 1)
    assert all(torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(torch.equal(x[1], y[1]) for x, y in zip(a, c))


def test_one_fold_or_more_folds_than_images_are_refused():
    with pytest.raises(CifarlabError, match="at least 2"):
        kfold_indices(10, 1)
    with pytest.raises(CifarlabError, match="more than the 4 images"):
        kfold_indices(4, 5)
