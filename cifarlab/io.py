"""Atomic file writes: a run folder never holds a half-written file."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch


def _atomic(path: Path, write: Callable[[str], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _json_safe(value: Any) -> Any:
    """JSON has no inf/nan: store them as strings so every reader can parse the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path, data: dict) -> Path:
    text = json.dumps(_json_safe(data), indent=2, sort_keys=False) + "\n"
    return write_text(path, text)


def write_text(path, text: str) -> Path:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    return _atomic(Path(path), write)


def torch_save(obj, path) -> Path:
    return _atomic(Path(path), lambda tmp: torch.save(obj, tmp))


def save_figure(fig, path) -> Path:
    suffix = Path(path).suffix.lstrip(".") or "png"
    return _atomic(Path(path), lambda tmp: fig.savefig(tmp, format=suffix, dpi=110, bbox_inches="tight"))


def read_json(path) -> dict:
    with open(path) as f:
        return json.load(f)
