import pytest
import torch
import torch.nn.functional as F

from cifarlab.classify.augment import (Augment, PolicyStep, cutout, parse_augment, random_crop, random_flip,
                                       random_rotation)
from cifarlab.errors import CifarlabError


def batch(n=16):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("spec", ["crop:2,flip", "crop:4,flip,rotate:15", "cutout:8", "none", ""])
def test_augmentation_keeps_shape_and_dtype(spec):
    x = batch()
    y = Augment(spec)(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == x.dtype


def test_augmentation_is_deterministic_under_a_seed_and_varies_across_seeds():
    aug, x = Augment("crop:4,flip,rotate:15,cutout:8"), batch()
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    c = aug(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_flip_mirrors_some_images_and_keeps_the_rest():
    x = batch(64)
    y = random_flip(x, torch.Generator().manual_seed(0))
    same = (y == x).flatten(1).all(1)
    mirrored = (y == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()


def test_crop_is_a_shifted_window_of_the_reflected_image():
    x = batch(8)
    y = random_crop(x, 2, torch.Generator().manual_seed(0))
    padded = F.pad(x, (2,) * 4, mode="reflect")
    for i in range(len(x)):  # each output equals one of the 25 windows
        windows = [padded[i, :, dy:dy + 32, dx:dx + 32] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(y[i], w) for w in windows)


def test_labels_stay_with_their_images():
    """Augmentation acts per image: image i stays image i (the label index is untouched)."""
    x = torch.zeros(4, 3, 32, 32)
    x[torch.arange(4), 0] = torch.arange(4).float().view(4, 1, 1)  # image i is constant i in channel 0
    y = Augment("crop:4,flip,rotate:10")(x, torch.Generator().manual_seed(0))
    assert torch.allclose(y[:, 0].mean((1, 2)), torch.arange(4).float(), atol=1e-5)


def test_rotation_by_zero_and_cutout_by_zero_change_nothing():
    x = batch(4)
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(random_rotation(x, 0.0, g), x, atol=1e-5)
    assert torch.equal(cutout(x, 0, g), x)


def test_cutout_zeroes_at_most_one_square():
    y = cutout(torch.ones(32, 3, 32, 32), 8, torch.Generator().manual_seed(0))
    zeros = (y[:, 0] == 0).flatten(1).sum(1)
    assert (zeros <= 64).all() and (zeros > 0).all()


def test_parse_augment_lists_valid_names_and_rejects_bad_amounts():
    assert parse_augment("crop:2,flip") == [("crop", 2), ("flip", None)]
    with pytest.raises(CifarlabError, match="valid: crop, flip, rotate, cutout"):
        parse_augment("blur")
    with pytest.raises(CifarlabError, match="takes no amount"):
        parse_augment("flip:3")
    with pytest.raises(CifarlabError, match="must be a number"):
        parse_augment("crop:x")


@pytest.mark.parametrize("spec", ["cutmix:1.0", "mixup:0.2", "crop:2,cutmix,mixup"])
def test_label_mixing_gives_label_distributions_that_match_the_mixed_images(spec):
    torch.manual_seed(0)
    aug, x, labels = Augment(spec), batch(), torch.arange(16) % 10
    images, targets = aug.mix(aug(x, torch.Generator().manual_seed(0)), labels, 10)
    assert images.shape == x.shape and targets.shape == (16, 10)
    assert torch.allclose(targets.sum(1), torch.ones(16))
    assert not torch.equal(targets, F.one_hot(labels, 10).float())   # something was mixed
    # each image's label weight is the share of it left in the mix: at least half of the batch keeps the most
    assert (targets.max(1).values >= 0.5 - 1e-6).all()
    assert bool(aug) and Augment("crop:2").mix(x, labels, 10)[1] is labels   # no mixing: labels untouched


def test_label_mixing_amounts_are_checked():
    with pytest.raises(CifarlabError, match="must be a number from 0.05 to 10"):
        parse_augment("cutmix:0")


@pytest.mark.parametrize("spec, policy", [
    ("autoaugment", lambda v2: v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)),
    ("randaugment:5", lambda v2: v2.RandAugment(magnitude=5)),
    ("trivialaugment", lambda v2: v2.TrivialAugmentWide()),
])
def test_policies_are_torchvisions_drawn_per_image_and_repeatable(spec, policy):
    from collections import Counter
    from torchvision.transforms import v2
    x = batch(64)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    out = Augment(spec)(x, torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), before)               # the caller's RNG is left alone
    assert torch.equal(out, Augment(spec)(x, torch.Generator().manual_seed(7)))
    assert not torch.equal(out, Augment(spec)(x, torch.Generator().manual_seed(8)))
    # the same as torchvision's policy applied image by image on the seed drawn from the generator
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=torch.Generator().manual_seed(7)))
    torch.manual_seed(seed)
    reference = policy(v2)
    assert torch.equal(out, torch.stack([reference(image) for image in x]))
    # ... although images that drew the same op went through it together, as one batch
    torch.manual_seed(seed)
    first_ops = Counter(plan[0] for plan in PolicyStep(policy(v2)).draw(len(x), (32, 32)) if plan)
    assert max(first_ops.values()) >= 2
    changed = (out != x).flatten(1).any(1)
    assert changed.sum() >= 2 and out.shape == x.shape and out.dtype == x.dtype


def test_policy_amounts_are_checked():
    with pytest.raises(CifarlabError, match="randaugment:31.*a whole number from 0 to 30"):
        parse_augment("randaugment:31")
    with pytest.raises(CifarlabError, match="takes no amount"):
        parse_augment("autoaugment:3")
