"""Classify image files of any size with a trained run."""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torchvision.io import ImageReadMode, decode_image

from ..data.sources import fit_to_size
from ..devices import resolve_device
from ..errors import CifarlabError
from .artifact import IMAGE_SIZE, ImageClassifier


def read_image(path: Path) -> torch.Tensor:
    """uint8 (3, 32, 32): the shorter side scaled to 32 px (antialiased), then the centre square."""
    if not path.is_file():
        raise CifarlabError(f"image {str(path)!r} does not exist")
    try:
        image = decode_image(torchvision.io.read_file(str(path)), mode=ImageReadMode.RGB)
    except Exception:
        raise CifarlabError(f"{str(path)!r} is not a readable image (png, jpeg, gif, webp, bmp, tiff)") from None
    return fit_to_size(image, IMAGE_SIZE)


@torch.inference_mode()
def predict_files(model: ImageClassifier, paths: list[Path], top_k: int = 3, device: str = "auto") -> list[dict]:
    if top_k < 1:
        raise CifarlabError(f"--top-k must be a positive integer, got {top_k}")
    dev = resolve_device(device)
    batch = torch.stack([read_image(p) for p in paths]).to(dev)
    probabilities = model.to(dev).eval()(batch).float().softmax(1).cpu()
    top = probabilities.topk(min(top_k, probabilities.shape[1]), dim=1)
    return [{"image": str(path), "top": [(model.classes[int(i)], float(p)) for p, i in zip(values, index)]}
            for path, values, index in zip(paths, top.values, top.indices)]
