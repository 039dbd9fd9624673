"""Where images come from: real CIFAR-10, a user's folder, or an embedded sample.

Every source returns an `ImageSet`: uint8 images (N, 3, S, S) with S = 32, plus labels
when the source has them. Images stay uint8 until used (4x less memory than float).
"""
from __future__ import annotations

import os
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import CifarlabError
from ..imagefiles import decode

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SAMPLE_TRAIN_PHOTOS = ("astronaut", "rocket", "immunohistochemistry", "hubble_deep_field", "retina", "colorwheel")
SAMPLE_TEST_PHOTOS = ("coffee", "chelsea")  # whole photos held out: test crops never overlap training ones
CIFAR10_HELP = ("get the real data by running once with network access "
                "(torchvision downloads CIFAR-10 into --data-root), or point --data at an image folder")


@dataclass
class ImageSet:
    images: torch.Tensor                 # uint8 (N, 3, S, S)
    labels: torch.Tensor | None = None   # int64 (N,) or None when the source has no classes
    classes: list[str] | None = None
    name: str = ""
    skipped: list[str] = field(default_factory=list)  # unreadable files, skipped with a warning

    def __len__(self) -> int:
        return len(self.images)

    def float(self) -> torch.Tensor:
        return self.images.float().div_(255)

    def subset(self, index: torch.Tensor) -> "ImageSet":
        labels = self.labels[index] if self.labels is not None else None
        return ImageSet(self.images[index], labels, self.classes, self.name)


def default_data_root() -> Path:
    return Path(os.environ.get("CIFARLAB_DATA", Path.home() / ".cache" / "cifarlab" / "data"))


def fit_to_size(image: torch.Tensor, size: int = 32) -> torch.Tensor:
    """The stated rule for foreign images: scale the shorter side to `size` (antialiased),
    then take the centred `size` x `size` square."""
    h, w = image.shape[-2:]
    if (h, w) != (size, size):
        # imported here: `transform apply`'s Ray actors import this module, and torchvision costs ~2 s
        import torchvision.transforms.v2.functional as F
        image = F.resize(image, size, antialias=True)
        image = F.center_crop(image, [size, size])
    return image


def load_images(data: str = "cifar10", split: str = "train", root: str | os.PathLike | None = None,
                size: int = 32, download: bool = True) -> ImageSet:
    """Load `data` ('cifar10', 'sample' or a folder path) for `split` ('train' or 'test')."""
    if split not in ("train", "test"):
        raise CifarlabError(f"split must be 'train' or 'test', got {split!r}")
    if data == "cifar10":
        return _cifar10(split, Path(root) if root else default_data_root(), download)
    if data == "sample":
        return sample_images(split, size=size)
    return load_folder(data, split, size)


def _cifar10(split: str, root: Path, download: bool) -> ImageSet:
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(15)  # a machine without network must not hang here
    import torchvision
    try:
        ds = torchvision.datasets.CIFAR10(root, train=(split == "train"), download=download)
    except Exception as e:  # no network, no files: say so loudly, then use the sample
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        warnings.warn(
            f"CIFAR-10 is not available under {root} ({reason}). FALLING BACK to the embedded "
            f"'sample' images, which are NOT CIFAR-10: {CIFAR10_HELP}.", stacklevel=2)
        return sample_images(split)
    finally:
        socket.setdefaulttimeout(old_timeout)
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images, torch.tensor(ds.targets), list(ds.classes), f"cifar10-{split}")


def sample_images(split: str = "train", count: int | None = None, size: int = 32, seed: int = 0) -> ImageSet:
    """Random square crops (side 48 to 192 px) of scikit-image's colour photographs, scaled
    to `size`. Train and test crops come from different photographs. Needs no network."""
    import skimage.data

    photos = SAMPLE_TRAIN_PHOTOS if split == "train" else SAMPLE_TEST_PHOTOS
    count = count or (6000 if split == "train" else 1000)
    g = torch.Generator().manual_seed(seed + (0 if split == "train" else 1))
    sources = [torch.from_numpy(getattr(skimage.data, name)()[..., :3].copy()).permute(2, 0, 1) for name in photos]
    import torchvision.transforms.v2.functional as F
    crops = []
    for i in range(count):
        photo = sources[i % len(sources)]
        h, w = photo.shape[-2:]
        side = int(torch.randint(48, min(192, h, w) + 1, (1,), generator=g))
        top = int(torch.randint(0, h - side + 1, (1,), generator=g))
        left = int(torch.randint(0, w - side + 1, (1,), generator=g))
        crop = photo[:, top:top + side, left:left + side]
        crops.append(F.resize(crop, [size, size], antialias=True))
    return ImageSet(torch.stack(crops), None, None, f"sample-{split}")


def read_image(path) -> torch.Tensor:
    """uint8 (3, H, W) RGB through Pillow (`cifarlab.imagefiles.decode`: 16-bit images scaled)."""
    return torch.from_numpy(decode(path))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_folder(path: str | os.PathLike, split: str = "train", size: int = 32) -> ImageSet:
    """An ImageFolder tree (class subfolders) or a flat folder of images.

    A folder holding ``train/`` and ``test/`` subfolders gives those splits; any other folder
    is one pool of images (hold out your test images with the validation split)."""
    folder = Path(path)
    if not folder.exists():
        raise CifarlabError(f"data folder {str(folder)!r} does not exist: expected 'cifar10', 'sample' "
                            f"or a folder of images")
    if not folder.is_dir():
        raise CifarlabError(f"--data {str(folder)!r} is not a folder: expected 'cifar10', 'sample' or a folder of images")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise CifarlabError(f"data folder {str(folder)!r} is not readable")
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        folder = folder / split
    files = _image_files(folder)
    if not files:
        raise CifarlabError(f"data folder {str(folder)!r} holds no images "
                            f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    class_of = [f.relative_to(folder).parts[0] if len(f.relative_to(folder).parts) > 1 else None for f in files]
    labelled = all(c is not None for c in class_of)
    classes = sorted(set(class_of)) if labelled else None
    images, labels, skipped = [], [], []
    for file, cls in zip(files, class_of):
        try:
            image = read_image(file)
        except Exception:
            skipped.append(str(file))
            continue
        images.append(fit_to_size(image, size))
        if labelled:
            labels.append(classes.index(cls))
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image(s) in {folder}, e.g. {skipped[0]}", stacklevel=2)
    if not images:
        raise CifarlabError(f"no readable images in {str(folder)!r} ({len(skipped)} unreadable)")
    return ImageSet(torch.stack(images), torch.tensor(labels) if labelled else None, classes,
                    folder.name, skipped)


def validation_split(n: int, fraction: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train_index, val_index) with `fraction` of `n` held out (at least one each)."""
    if not 0 < fraction < 1:
        raise CifarlabError(f"validation fraction must be between 0 and 1, got {fraction}")
    if n < 2:
        raise CifarlabError(f"need at least 2 images to hold out a validation split, got {n}")
    n_val = min(max(1, round(n * fraction)), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values
