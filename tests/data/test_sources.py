import pytest
import torch
import torchvision.transforms.v2.functional as F

from cifarlab.data import fit_to_size, load_folder, load_images, sample_images, validation_split
from cifarlab.errors import CifarlabError


def _write_png(path, h=32, w=32, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    F.to_pil_image(torch.full((3, h, w), value, dtype=torch.uint8)).save(path)


def test_shared_subset_loads_as_labelled_cifar(subset_path):
    images = load_folder(subset_path)
    assert images.images.shape == (5085, 3, 32, 32) and images.images.dtype == torch.uint8
    assert images.classes[:3] == ["airplane", "automobile", "bird"] and len(images.classes) == 10
    assert images.labels.bincount().min() > 400


def test_flat_folder_has_no_labels_and_foreign_sizes_follow_the_rule(tmp_path):
    _write_png(tmp_path / "a.png", 64, 48, value=10)
    _write_png(tmp_path / "b.png")
    images = load_folder(tmp_path)
    assert images.labels is None and images.images.shape == (2, 3, 32, 32)
    assert images.images[0].float().mean() == pytest.approx(10, abs=1)


def test_fit_to_size_scales_shorter_side_then_centre_crops():
    image = torch.zeros(3, 64, 128, dtype=torch.uint8)
    image[:, :, 48:80] = 255                      # a bright centre band
    out = fit_to_size(image, 32)
    assert out.shape == (3, 32, 32)
    assert out[:, :, 12:20].float().mean() > 250   # the band lands in the middle of the crop
    assert out[:, :, :8].float().mean() < 5


def test_corrupt_image_is_skipped_with_warning_and_counted(tmp_path):
    _write_png(tmp_path / "cat" / "ok.png")
    (tmp_path / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        images = load_folder(tmp_path)
    assert len(images) == 1 and len(images.skipped) == 1


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: p, "holds no images"),
])
def test_bad_folders_are_refused(tmp_path, make, message):
    with pytest.raises(CifarlabError, match=message):
        load_folder(make(tmp_path))


def test_cifar10_unavailable_falls_back_to_sample_loudly(tmp_path):
    with pytest.warns(UserWarning, match="FALLING BACK to the embedded 'sample'"):
        images = load_images("cifar10", "test", root=tmp_path, download=False)
    assert images.name == "sample-test" and images.images.shape[1:] == (3, 32, 32)


def test_sample_is_seeded_and_splits_use_different_photos():
    a, b = sample_images("train", count=20), sample_images("train", count=20)
    assert torch.equal(a.images, b.images)
    test = sample_images("test", count=20)
    assert not torch.equal(a.images, test.images)


def test_validation_split_is_seeded_disjoint_and_complete():
    train, val = validation_split(100, 0.1, seed=3)
    assert len(val) == 10 and len(train) == 90
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(100))
    assert torch.equal(val, validation_split(100, 0.1, seed=3)[1])
    assert not torch.equal(val, validation_split(100, 0.1, seed=4)[1])
