"""Training augmentation as batched tensor ops on the training device.

A spec is a comma-separated list of steps, each ``name`` or ``name:amount``::

    crop:2,flip            # translate by up to 2 px (reflect padding), mirror a random half
    altflip,crop:2         # airbench94: alternating flip, then translate by up to 2 px
    crop:4,flip,rotate:15  # the report's final recipe
    cutout:8               # zero one random 8x8 square per image
    autoaugment            # torchvision's AutoAugment, CIFAR-10 policy, drawn per image
    randaugment:9          # torchvision's RandAugment (2 ops) at magnitude 9; trivialaugment: TrivialAugmentWide
    cutmix:1.0             # torchvision's CutMix (Beta(1, 1) areas), labels mixed to match
    mixup:0.2              # torchvision's MixUp; with cutmix as well, one of the two per batch
    none

Every step takes a float batch (N, C, H, W) and a `torch.Generator` on the batch's device, and
draws all its randomness for the whole batch at once: no per-image Python on the hot path, and
the same generator state gives the same batch. The learned policies (`autoaugment`,
`randaugment`, `trivialaugment`) are torchvision's, drawn image by image by torchvision's own code
and applied in groups of images that drew the same op (`PolicyStep`); they draw from a global RNG
seeded from the batch's generator and put back afterwards, so they too repeat exactly and leave
the caller's RNG alone. `altflip` alone draws nothing per batch: it
mirrors by each image's place in the training set and the epoch's parity (see
`alternating_flip`), so the trainer hands it the batch's dataset indices and the epoch.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import CifarlabError


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to `padding` px in x and y; the border is reflected (a zero
    border would teach the net that black edges mean nothing, and costs accuracy)."""
    if padding <= 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4, mode="reflect")
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator, device=images.device)
    rows = offsets[:, :1] + torch.arange(h, device=images.device)            # (N, H)
    cols = offsets[:, 1:] + torch.arange(w, device=images.device)            # (N, W)
    batch = torch.arange(n, device=images.device)[:, None, None]
    # advanced indexing on dims 0, 2, 3 puts the indexed dims first: (N, H, W, C)
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror left-right a random half of the batch."""
    mirror = torch.rand(len(images), generator=generator, device=images.device) < 0.5
    return torch.where(mirror[:, None, None, None], images.flip(-1), images)


def alternating_flip(images: torch.Tensor, mirror_in_even_epochs: torch.Tensor, epoch: int) -> torch.Tensor:
    """airbench's alternating flip: a fixed random half of the training images is mirrored in
    even epochs and the other half in odd epochs, so every image is seen both ways in any two
    consecutive epochs (random flipping shows a quarter of them the same way twice).
    `mirror_in_even_epochs`: one bool per image of the batch (its place in the training set)."""
    mirror = mirror_in_even_epochs ^ bool(epoch % 2)
    return torch.where(mirror[:, None, None, None], images.flip(-1), images)


def flip_plan(images: int, seed: int) -> torch.Tensor:
    """Which training images `alternating_flip` mirrors in even epochs: a seeded random half,
    fixed for the run (a resumed run makes the same plan)."""
    return torch.rand(images, generator=torch.Generator().manual_seed(seed)) < 0.5


def random_rotation(images: torch.Tensor, degrees: float, generator: torch.Generator) -> torch.Tensor:
    """Rotate each image by a uniform angle in [-degrees, degrees] (bilinear, reflected border)."""
    n = len(images)
    angle = (torch.rand(n, generator=generator, device=images.device) * 2 - 1) * math.radians(degrees)
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def cutout(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero one `size` x `size` square per image, centred anywhere (it may be clipped by the edge)."""
    n, _, h, w = images.shape
    centre = torch.stack([torch.randint(0, h, (n,), generator=generator, device=images.device),
                          torch.randint(0, w, (n,), generator=generator, device=images.device)], 1)
    top, left = centre[:, 0] - size // 2, centre[:, 1] - size // 2
    ys = torch.arange(h, device=images.device)[None, :]
    xs = torch.arange(w, device=images.device)[None, :]
    in_rows = (ys >= top[:, None]) & (ys < top[:, None] + size)               # (N, H)
    in_cols = (xs >= left[:, None]) & (xs < left[:, None] + size)             # (N, W)
    hole = in_rows[:, :, None] & in_cols[:, None, :]
    return images.masked_fill(hole[:, None], 0.0)


class PolicyStep:
    """A torchvision augmentation policy as a batch step, with torchvision's own draws and ops.

    The policy draws each image's ops from its own code, on a global RNG seeded from the batch's
    generator inside `fork_rng` (repeatable, and the caller's RNG is left as it was): its
    op-applying method is shadowed by one that only records (op, magnitude). Then each distinct
    op and magnitude at each position runs once, through torchvision's method, on every image
    that drew it. The result equals the policy applied image by image on the same seed; grouping
    cuts the calls per batch of 128 from 256 to ~40 (RandAugment: 37 -> 15 ms a batch here)."""

    def __init__(self, policy):
        self.policy = policy

    def draw(self, count: int, size: tuple[int, int]) -> list[list[tuple[str, float]]]:
        """Each image's ops in order, as the policy would apply them to an image of `size`."""
        drawn: list[list] = []

        def record(image, transform_id, magnitude, interpolation, fill):
            drawn[-1].append((transform_id, magnitude))
            return image

        probe = torch.zeros(3, *size, dtype=torch.uint8)   # the draws depend only on the size
        self.policy._apply_image_or_video_transform = record
        try:
            for _ in range(count):
                drawn.append([])
                self.policy(probe)
        finally:
            del self.policy._apply_image_or_video_transform
        return drawn

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=generator.device))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            plans = self.draw(len(images), tuple(images.shape[-2:]))
        images = images.clone()
        for position in range(max(map(len, plans), default=0)):
            groups: dict[tuple[str, float], list[int]] = {}
            for i, plan in enumerate(plans):
                if position < len(plan) and plan[position][0] != "Identity":
                    groups.setdefault(plan[position], []).append(i)
            for (op, magnitude), members in groups.items():
                index = torch.tensor(members, device=images.device)
                images[index] = self.policy._apply_image_or_video_transform(
                    images[index], op, magnitude, interpolation=self.policy.interpolation, fill=self.policy._fill)
        return images


def torchvision_policy(name: str, magnitude: int | None = None):
    """torchvision's learned policy `name` (autoaugment: the CIFAR-10 one)."""
    from torchvision.transforms import v2
    if name == "autoaugment":
        return v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    if name == "randaugment":
        return v2.RandAugment(magnitude=int(magnitude))
    return v2.TrivialAugmentWide()


# name -> (function, takes an amount, default amount)
AUGMENTATIONS = {
    "crop": (random_crop, True, 4),
    "flip": (random_flip, False, None),
    "rotate": (random_rotation, True, 15),
    "cutout": (cutout, True, 8),
    "altflip": (alternating_flip, False, None),      # needs the batch's dataset indices and the epoch
    "autoaugment": (torchvision_policy, False, None),  # torchvision's policies, run by PolicyStep
    "randaugment": (torchvision_policy, True, 9),
    "trivialaugment": (torchvision_policy, False, None),
    "cutmix": (None, True, 1.0),                     # label mixing (Augment.mix): the amount is Beta's alpha
    "mixup": (None, True, 0.2),
}
LABEL_MIXES = ("cutmix", "mixup")
# the amounts that make sense on 32x32 images: (low, high, whole numbers only)
AMOUNTS = {"crop": (0, 16, True), "rotate": (0, 180, False), "cutout": (1, 32, True), "cutmix": (0.05, 10, False),
           "mixup": (0.05, 10, False), "randaugment": (0, 30, True)}
POLICIES = ("autoaugment", "randaugment", "trivialaugment")


def parse_augment(spec: str | None) -> list[tuple[str, float | None]]:
    """'crop:2,flip' -> [('crop', 2), ('flip', None)]; 'none' or '' -> []."""
    steps = []
    for part in filter(None, (p.strip() for p in (spec or "").split(","))):
        if part == "none":
            continue
        name, colon, amount = part.partition(":")
        if name not in AUGMENTATIONS:
            raise CifarlabError(f"unknown augmentation {name!r} in {spec!r}; valid: "
                                f"{', '.join(AUGMENTATIONS)} (e.g. 'crop:4,flip,rotate:15,cutout:8' or 'none')")
        _, takes_amount, default = AUGMENTATIONS[name]
        if colon and not takes_amount:
            raise CifarlabError(f"augmentation {name!r} takes no amount, got {part!r}")
        if takes_amount:
            if colon and not amount.strip():
                raise CifarlabError(f"augmentation {part!r} has an empty amount: write {name} or {name}:{default}")
            low, high, whole = AMOUNTS[name]
            try:
                value = float(amount) if amount else float(default)
            except ValueError:
                raise CifarlabError(f"augmentation amount in {part!r} must be a number") from None
            if not (low <= value <= high) or (whole and value != int(value)):
                kind = "a whole number" if whole else "a number"
                raise CifarlabError(f"augmentation amount in {part!r} must be {kind} from {low} to {high}")
            steps.append((name, int(value) if whole else value))
        else:
            steps.append((name, None))
    return steps


class Augment:
    """The parsed spec as a callable: ``augment(batch, generator)``; with ``altflip``,
    ``augment(batch, generator, index=positions_in_training_set, epoch=epoch)`` and the size
    of the training set and the seed given here."""

    def __init__(self, spec: str | None, train_images: int | None = None, seed: int = 0):
        self.spec = spec or "none"
        parsed = parse_augment(spec)
        self.steps = [(name, amount) for name, amount in parsed if name not in LABEL_MIXES]
        self.policies = {name: PolicyStep(torchvision_policy(name, amount))
                         for name, amount in self.steps if name in POLICIES}
        self.mixes = [(name, amount) for name, amount in parsed if name in LABEL_MIXES]
        self._mixer = None
        self.plan = None
        if any(name == "altflip" for name, _ in self.steps):
            if train_images is None:
                raise ValueError("augmentation 'altflip' needs the number of training images (train_images=)")
            self.plan = flip_plan(train_images, seed)

    def __call__(self, images: torch.Tensor, generator: torch.Generator, index: torch.Tensor | None = None,
                 epoch: int = 0) -> torch.Tensor:
        for name, amount in self.steps:
            fn = AUGMENTATIONS[name][0]
            if name in self.policies:
                images = self.policies[name](images, generator)
            elif name == "altflip":
                if index is None:
                    raise ValueError("augmentation 'altflip' needs the batch's dataset indices (index=)")
                if self.plan.device != images.device:
                    self.plan = self.plan.to(images.device)
                images = fn(images, self.plan[index], epoch)
            else:
                images = fn(images, generator) if amount is None else fn(images, amount, generator)
        return images

    def mix(self, images: torch.Tensor, labels: torch.Tensor, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """CutMix / MixUp (torchvision's, on the global RNG): the batch and its mixed label
        distributions; without them the batch and its class indices, unchanged."""
        if not self.mixes:
            return images, labels
        if self._mixer is None:
            from torchvision.transforms import v2
            kinds = {"cutmix": v2.CutMix, "mixup": v2.MixUp}
            mixers = [kinds[name](alpha=amount, num_classes=classes) for name, amount in self.mixes]
            self._mixer = mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)
        return self._mixer(images, labels)

    def __bool__(self) -> bool:
        return bool(self.steps or self.mixes)
