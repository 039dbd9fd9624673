"""Run a trained network over a folder of images and write the outputs as PNGs."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as F
from tqdm import tqdm

from ..data.sources import _image_files, fit_to_size, read_image
from ..devices import resolve_device
from ..errors import CifarlabError
from ..io import _atomic
from .artifact import build_from_checkpoint, read_checkpoint


def apply_folder(run_dir: Path, src: Path, dst: Path, batch_size: int = 256, device: str = "auto") -> tuple[int, int]:
    """Images in `src` (any size: scaled and centre-cropped to the model's input) go through the
    network in batches; each output lands at the same relative path under `dst`, as PNG."""
    model = build_from_checkpoint(read_checkpoint(run_dir / "model.pt"))
    if not src.is_dir():
        raise CifarlabError(f"source folder {str(src)!r} does not exist or is not a folder")
    src, dst = src.resolve(), dst.resolve()
    if dst == src or src in dst.parents:
        raise CifarlabError(f"refusing to write into the source folder: choose a DST outside {src}")
    files = _image_files(src)
    if not files:
        raise CifarlabError(f"source folder {str(src)!r} holds no images")
    dev = resolve_device(device)
    model.to(dev)
    size = model.in_shape[1]
    written, skipped = 0, []
    for start in tqdm(range(0, len(files), batch_size), desc="apply", unit="batch"):
        batch, names = [], []
        for file in files[start:start + batch_size]:
            try:
                image = read_image(file)
            except Exception:
                skipped.append(file)
                continue
            batch.append(fit_to_size(image, size))
            names.append(file)
        if not batch:
            continue
        with torch.inference_mode():
            out = model(torch.stack(batch).to(dev)).float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
        for file, image in zip(names, out):
            target = (dst / file.relative_to(src)).with_suffix(".png")
            if image.shape[0] not in (1, 3):
                image = image[:1]
            picture = F.to_pil_image(image[0] if image.shape[0] == 1 else image)
            _atomic(target, lambda tmp, pic=picture: pic.save(tmp, format="PNG"))
            written += 1
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image(s), e.g. {skipped[0]}", stacklevel=2)
    return written, len(skipped)
