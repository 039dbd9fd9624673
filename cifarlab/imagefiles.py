"""Image files to uint8 arrays and back, with Pillow and NumPy only.

Light on purpose: the worker processes of `transform apply` import this module, not torch,
so they start in a fraction of a second. Training, evaluation, `predict` and `apply` all read
files through `decode` (`cifarlab.data.sources.read_image` wraps it), so every path treats a
file alike.
"""
from __future__ import annotations


import numpy as np


def decode(path) -> np.ndarray:
    """uint8 (3, H, W) RGB, as torchvision's ImageFolder reads images through Pillow.

    16-bit images (Pillow modes I;16 and I) are scaled to 8 bits, round(v * 255 / 65535):
    Pillow's own conversion to RGB would clip them, turning mid-grey into white. Float
    images (mode F) are refused: their scale is unknown."""
    from PIL import Image

    with open(path, "rb") as f, Image.open(f) as image:
        if image.mode.startswith("I"):
            wide = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
            gray = ((wide * 255 + 32767) // 65535).astype(np.uint8)
            return np.ascontiguousarray(np.broadcast_to(gray, (3, *gray.shape)))
        if image.mode == "F":
            raise ValueError(f"{path}: 32-bit float images are not supported (their value range is unknown)")
        return np.ascontiguousarray(np.asarray(image.convert("RGB")).transpose(2, 0, 1))


def decode_fitted(path, size: int) -> np.ndarray:
    """`decode`, then the stated rule for other sizes (cifarlab.data.fit_to_size: the shorter
    side scaled to `size`, antialiased, then the centre square); torch only when needed."""
    image = decode(path)
    if image.shape[1:] != (size, size):
        import torch

        from .data.sources import fit_to_size
        image = fit_to_size(torch.from_numpy(image), size).numpy()
    return image


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (C, H, W) with C = 1 or 3 -> the bytes of a PNG (Pillow's encoder, its default level)."""
    import io

    from PIL import Image
    picture = Image.fromarray(image[0] if image.shape[0] == 1 else np.ascontiguousarray(image.transpose(1, 2, 0)))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


# ---- chunks, for the worker processes of `transform apply`

def init_worker() -> None:
    import sys
    if "torch" in sys.modules:   # forked from a process that has torch: one thread, no parallel regions
        sys.modules["torch"].set_num_threads(1)


def decode_chunk(files: list[str], size: int) -> tuple[np.ndarray, list[int], list[str]]:
    """uint8 (n, 3, size, size) of the readable files, their positions, and the unreadable files."""
    images, kept, failed = [], [], []
    for i, file in enumerate(files):
        try:
            images.append(decode_fitted(file, size))
            kept.append(i)
        except Exception:
            failed.append(file)
    stacked = np.stack(images) if images else np.zeros((0, 3, size, size), np.uint8)
    return stacked, kept, failed


def encode_chunk(targets: list[str], images: np.ndarray) -> int:
    """Write uint8 (n, C, H, W) images as PNGs, each atomically (`cifarlab.io.write_files`)."""
    from .io import write_files
    return write_files((target, encode_png(image)) for target, image in zip(targets, images))
