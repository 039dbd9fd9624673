"""Run a trained network over a folder of images and write the outputs as PNGs.

DST mirrors SRC's tree; each image becomes `<stem>.png`. Two inputs of one folder that would
share a name (`x.jpg` and `x.png`) both keep their suffix instead (`x.jpg.png`, `x.png.png`),
so no output is written twice. The whole plan is checked before anything is written: no
output may land inside SRC (which would replace or add to the inputs) and no two inputs may
map to one output. Outputs that exist already are kept and counted (so an interrupted job
resumes where it stopped) unless `overwrite` is given.
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as F
from tqdm import tqdm

from ..data.sources import _image_files, fit_to_size, read_image
from ..devices import resolve_device
from ..errors import CifarlabError
from ..io import _atomic
from .artifact import build_from_checkpoint, read_checkpoint


@dataclass
class ApplyResult:
    written: int = 0
    existing: int = 0          # outputs already there (kept: not overwritten)
    unreadable: int = 0


def plan_outputs(src: Path, files: list[Path], dst: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs for `files` under `src`; a one-line error when the plan is unsafe."""
    relative = [f.relative_to(src) for f in files]
    stems = Counter(r.with_suffix(".png") for r in relative)
    outputs = [dst / (r.with_suffix(".png") if stems[r.with_suffix(".png")] == 1 else r.with_name(r.name + ".png"))
               for r in relative]
    seen: dict[Path, Path] = {}
    for file, out in zip(files, outputs):
        if out in seen:
            raise CifarlabError(f"{str(seen[out])!r} and {str(file)!r} would both be written to {str(out)!r}; "
                                f"rename one of them")
        seen[out] = file
        if src == out.resolve() or src in out.resolve().parents:
            raise CifarlabError(f"refusing to write {str(out)!r}: it lies inside the source folder {str(src)!r}; "
                                f"choose a DST outside it")
    return list(zip(files, outputs))


def apply_folder(run_dir: Path, src: Path, dst: Path, batch_size: int = 256, device: str = "auto",
                 overwrite: bool = False) -> ApplyResult:
    """Images in `src` (any size: scaled and centre-cropped to the model's input) go through the
    network in batches; each output lands at its planned path under `dst` (see the module docstring)."""
    from .. import model_file
    model = build_from_checkpoint(read_checkpoint(model_file(run_dir)))
    if not src.is_dir():
        raise CifarlabError(f"source folder {str(src)!r} does not exist or is not a folder")
    src, dst = src.resolve(), dst.resolve()
    if dst == src or src in dst.parents:
        raise CifarlabError(f"refusing to write into the source folder: choose a DST outside {src}")
    if dst.exists() and not dst.is_dir():
        raise CifarlabError(f"DST {str(dst)!r} is a file: expected a folder")
    files = _image_files(src)
    if not files:
        raise CifarlabError(f"source folder {str(src)!r} holds no images")
    plan = plan_outputs(src, files, dst)
    result = ApplyResult()
    if not overwrite:
        todo = [(f, o) for f, o in plan if not o.exists()]
        result.existing = len(plan) - len(todo)
        plan = todo
    dev = resolve_device(device)
    model.to(dev)
    size = model.in_shape[1]
    skipped = []
    for start in tqdm(range(0, len(plan), batch_size), desc="apply", unit="batch"):
        batch, targets = [], []
        for file, target in plan[start:start + batch_size]:
            try:
                image = read_image(file)
            except Exception:
                skipped.append(file)
                continue
            batch.append(fit_to_size(image, size))
            targets.append(target)
        if not batch:
            continue
        with torch.inference_mode():
            out = model(torch.stack(batch).to(dev)).float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
        for target, image in zip(targets, out):
            if image.shape[0] not in (1, 3):
                image = image[:1]
            picture = F.to_pil_image(image[0] if image.shape[0] == 1 else image)
            _atomic(target, lambda tmp, pic=picture: pic.save(tmp, format="PNG"))
            result.written += 1
    result.unreadable = len(skipped)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image(s), e.g. {skipped[0]}", stacklevel=2)
    return result
