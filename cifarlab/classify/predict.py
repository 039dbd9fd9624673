"""Classify image files of any size with a trained run."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..data.sources import _image_files, fit_to_size, read_image
from ..devices import resolve_device
from ..errors import CifarlabError
from .artifact import IMAGE_SIZE, ImageClassifier


def image_paths(paths: list[Path]) -> list[Path]:
    """The named files, and every image file under each named folder (sorted)."""
    found = []
    for path in paths:
        if path.is_dir():
            inside = _image_files(path)
            if not inside:
                raise CifarlabError(f"folder {str(path)!r} holds no images")
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            raise CifarlabError(f"{str(path)!r} does not exist: expected image files or folders of images")
    return found


def read_for_model(path: Path) -> torch.Tensor:
    """uint8 (3, 32, 32): the shorter side scaled to 32 px (antialiased), then the centre square."""
    try:
        image = read_image(path)
    except Exception:
        raise CifarlabError(f"{str(path)!r} is not a readable image (png, jpeg, gif, webp, bmp, tiff)") from None
    return fit_to_size(image, IMAGE_SIZE)


@torch.inference_mode()
def predict_files(model: ImageClassifier, paths: list[Path], top_k: int = 3, device: str = "auto",
                  batch_size: int = 256) -> list[dict]:
    """Top-k classes of each image. A file named on its own must be readable; unreadable files
    found inside a named folder are skipped with a warning."""
    if top_k < 1:
        raise CifarlabError(f"--top-k must be a positive integer, got {top_k}")
    dev = resolve_device(device)
    named = {p for p in paths if not p.is_dir()}
    images, kept, skipped = [], [], []
    for path in image_paths(paths):
        try:
            images.append(read_for_model(path))
            kept.append(path)
        except CifarlabError:
            if path in named:
                raise
            skipped.append(path)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image(s), e.g. {skipped[0]}", stacklevel=2)
    if not images:
        raise CifarlabError("no readable images to classify")
    model = model.to(dev).eval()
    results = []
    for start in range(0, len(images), batch_size):
        batch = torch.stack(images[start:start + batch_size]).to(dev)
        probabilities = model(batch).float().softmax(1).cpu()
        top = probabilities.topk(min(top_k, probabilities.shape[1]), dim=1)
        results += [{"image": str(path), "top": [(model.classes[int(i)], float(p)) for p, i in zip(values, index)]}
                    for path, values, index in zip(kept[start:start + batch_size], top.values, top.indices)]
    return results
