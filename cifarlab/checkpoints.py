"""Writing and reading checkpoints (atomic writes; reads always `weights_only=True`, with one-line errors for missing or foreign files."""
from __future__ import annotations

from pathlib import Path

import torch

from .errors import CifarlabError
from .io import torch_save

# checkpoint "format" -> the command that writes it (for the error message)
WRITERS = {"cifarlab-transform/1": "cifarlab transform train", "cifarlab-classify/1": "cifarlab classify train"}


def read_checkpoint(path, expected_format: str | None = None) -> dict:
    """The checkpoint dict at `path`; `expected_format` None accepts any cifarlab format."""
    path = Path(path)
    writer = WRITERS.get(expected_format, "cifarlab")
    if not path.exists():
        raise CifarlabError(f"no checkpoint at {str(path)!r}: expected a run folder written by '{writer}'")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CifarlabError(f"checkpoint {str(path)!r} is unreadable or corrupt ({type(e).__name__})") from None
    found = ckpt.get("format") if isinstance(ckpt, dict) else None
    if found not in WRITERS or (expected_format and found != expected_format):
        raise CifarlabError(f"{str(path)!r} is not a checkpoint written by '{writer}'")
    return ckpt


def save_checkpoint(path, ckpt: dict) -> Path:
    """Atomic: a crash mid-write never replaces the previous best checkpoint."""
    return torch_save(ckpt, path)
