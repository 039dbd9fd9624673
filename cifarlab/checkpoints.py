"""Writing and reading checkpoints: atomic writes; reads always `weights_only=True` (a crafted
pickle never runs) and every missing, damaged, foreign or incomplete file is a one-line error.
The errors never pass on PyTorch's advice to retry with `weights_only=False`."""
from __future__ import annotations

from pathlib import Path

import torch

from .errors import CifarlabError
from .io import torch_save

# checkpoint "format" -> the command that writes it (for the error message)
WRITERS = {"cifarlab-transform/1": "cifarlab transform train", "cifarlab-classify/1": "cifarlab classify train"}
# what a model.pt of each format must hold to rebuild its network: key -> expected type
REQUIRED = {
    "cifarlab-transform/1": {"model": str, "model_kwargs": dict, "state_dict": dict, "in_shape": list,
                             "out_shape": list},
    "cifarlab-classify/1": {"model": str, "model_kwargs": dict, "state_dict": dict, "classes": list,
                            "mean": list, "std": list},
}
MAX_SIDE = 4096


def _load(path: Path, writer: str):
    if not path.exists():
        raise CifarlabError(f"no checkpoint at {str(path)!r}: expected a run folder written by '{writer}'")
    if not path.is_file():
        raise CifarlabError(f"{str(path)!r} is not a file: expected a checkpoint written by '{writer}'")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CifarlabError(f"{path.name} at {str(path)!r} is unreadable or corrupt, or not a cifarlab checkpoint "
                            f"({type(e).__name__}); nothing in it was run") from None


def _check_structure(ckpt: dict, path: Path, fmt: str) -> None:
    for key, kind in REQUIRED[fmt].items():
        if not isinstance(ckpt.get(key), kind):
            problem = "is missing" if key not in ckpt else f"is not a {kind.__name__}"
            raise CifarlabError(f"checkpoint {str(path)!r} is damaged: its {key!r} {problem}")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in ckpt["state_dict"].items()):
        raise CifarlabError(f"checkpoint {str(path)!r} is damaged: its 'state_dict' must map names to tensors")
    for key in ("in_shape", "out_shape"):
        if key in REQUIRED[fmt] and not (len(ckpt[key]) == 3 and all(
                isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIDE for v in ckpt[key])):
            raise CifarlabError(f"checkpoint {str(path)!r} is damaged: {key} {ckpt[key]!r} is not (C, H, W)")


def read_checkpoint(path, expected_format: str | None = None) -> dict:
    """The checkpoint dict at `path`; `expected_format` None accepts any cifarlab format."""
    path = Path(path)
    writer = WRITERS.get(expected_format, "cifarlab")
    ckpt = _load(path, writer)
    found = ckpt.get("format") if isinstance(ckpt, dict) else None
    if found not in WRITERS or (expected_format and found != expected_format):
        other = f" (it was written by '{WRITERS[found]}')" if found in WRITERS else ""
        raise CifarlabError(f"{str(path)!r} is not a checkpoint written by '{writer}'{other}")
    _check_structure(ckpt, path, found)
    return ckpt


def read_training_state(path, required: tuple[str, ...], writer: str) -> dict:
    """A last.pt (the state --resume continues from), checked for the keys the trainer needs."""
    path = Path(path)
    state = _load(path, writer)
    missing = [k for k in required if not isinstance(state, dict) or k not in state]
    if missing:
        raise CifarlabError(f"cannot resume from {str(path)!r}: it is damaged or was not written by '{writer}' "
                            f"(missing {', '.join(missing)})")
    return state


def save_checkpoint(path, ckpt: dict) -> Path:
    """Atomic: a crash mid-write never replaces the previous best checkpoint."""
    return torch_save(ckpt, path)
