"""The main job: distill an image pipeline into a fast network (train, evaluate, export, apply).

The names below load on first use (PEP 562): a process that needs one submodule (a Ray actor of
`transform apply` imports `engines`) does not import training, metrics and plots with it."""
from __future__ import annotations

import importlib

_EXPORTS = {"ImageTransformNet": ".artifact", "TransformConfig": ".config", "train": ".loop"}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
