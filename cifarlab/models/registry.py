"""Models register themselves by name (`@register_model`) and are built with `create_model`.

A transform model is built from the shapes the pipeline gives: ``in_shape`` (C, H, W) and
``out_shape`` (C, H, W); extra keyword arguments come from ``--model-args``.
"""
from __future__ import annotations

import inspect
import math
from typing import Callable

import torch.nn as nn

from ..errors import CifarlabError

_REGISTRY: dict[str, dict[str, Callable[..., nn.Module]]] = {"transform": {}, "classify": {}}


def register_model(name: str, task: str = "transform"):
    def wrap(builder):
        _REGISTRY[task][name] = builder
        builder.model_name = name
        return builder
    return wrap


def list_models(task: str = "transform") -> list[str]:
    return sorted(_REGISTRY[task])


def model_builder(name: str, task: str = "transform") -> Callable[..., nn.Module]:
    if name not in _REGISTRY[task]:
        raise CifarlabError(f"unknown {task} model {name!r}; valid models: {', '.join(list_models(task))}")
    return _REGISTRY[task][name]


def create_model(name: str, task: str = "transform", **kwargs) -> nn.Module:
    builder = model_builder(name, task)
    accepted = inspect.signature(builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            valid = [p for p in accepted if p not in ("in_shape", "out_shape")]
            raise CifarlabError(f"model {name!r} has no option {', '.join(unknown)}; "
                                f"its options: {', '.join(valid) or 'none'}")
    for key, value in kwargs.items():
        if key in accepted:
            _check_option(name, key, value, accepted[key].default)
    try:
        return builder(**kwargs)
    except (ValueError, TypeError) as e:
        raise CifarlabError(f"cannot build model {name!r}: {e}") from None
    except (RuntimeError, MemoryError) as e:  # sizes no machine holds (a damaged or crafted checkpoint)
        raise CifarlabError(f"cannot build model {name!r} with {kwargs}: {str(e).splitlines()[0][:200]}") from None


def _check_option(model: str, key: str, value, default) -> None:
    """A model option must have the type of its default (the builder's signature says it)."""
    kinds = {bool: (bool, "true or false"), int: (int, "an integer"), float: ((int, float), "a number"),
             str: (str, "a word")}
    if type(default) not in kinds:
        return
    allowed, text = kinds[type(default)]
    if (isinstance(value, bool) and type(default) is not bool) or not isinstance(value, allowed) \
            or (isinstance(value, float) and not math.isfinite(value)):
        raise CifarlabError(f"model {model!r}: option {key!r} must be {text}, got {value!r}")


def parse_model_args(text: str | None) -> dict:
    """``"hidden=32,rank=2,act=gelu"`` -> {"hidden": 32, "rank": 2, "act": "gelu"}."""
    out: dict = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        if "=" not in part:
            raise CifarlabError(f"model argument {part!r} must look like name=value")
        key, value = (s.strip() for s in part.split("=", 1))
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                pass
        else:
            value = {"true": True, "false": False}.get(value.lower(), value)
        out[key] = value
    return out
