"""The input contract of every network `cifarlab.load` returns, checked in one place.

In: a tensor (N, C, H, W) of the model's C, H, W; uint8 (0-255), or float of any precision
(float32, float16, bfloat16, float64) with values in [0, 1]. Float input is computed in
float32; an empty batch gives an empty output. Anything else is a one-line error naming
what was expected.

Values: images scaled 0-255 but stored as float, or normalised ones (negative values), are
the common mistakes, and they pass every shape check. The classifier checks the value range
of every float batch on the CPU (next to its convolutions the check is free). For the
transform network the range is a documented contract: its forward pass costs about a
memory copy of the input, and even a check of the first image of each call
(`range_check = "first"`) added 16% at batch 1, 6% at batch 64 and 4% at batch 1024 in a
`cifarlab transform bench` run on this project's 2-core CPU (variant `checked` states it each
run); the speed is what this network is for. Set `net.range_check = "first"` (or "full") to have it
checked. A small overshoot (resampling ringing) is allowed. On a GPU the range is never
checked: a check there would stall the device on every call.
"""
from __future__ import annotations

import torch

from .errors import CifarlabError

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
INPUT_DTYPES = FLOAT_DTYPES + (torch.uint8,)
LOW, HIGH = -0.25, 1.25   # generous bounds around [0, 1]: overshoot passes, 0-255 and normalised data do not


def expected_text(in_shape) -> str:
    return f"(N, {', '.join(map(str, in_shape))})"


def check_batch(x, in_shape, hint: str = "") -> None:
    """A one-line error unless `x` is a batch of images of shape (N, *in_shape) and a known dtype."""
    expected = expected_text(in_shape)
    if not isinstance(x, torch.Tensor):
        raise CifarlabError(f"expected a tensor of images {expected}, got {type(x).__name__}")
    if x.dtype not in INPUT_DTYPES:
        raise CifarlabError(f"expected uint8 images or float images in [0, 1] (float32, float16, bfloat16 or "
                            f"float64), got dtype {x.dtype}")
    if x.dim() != 4:
        raise CifarlabError(f"expected a batch of images {expected}, got shape {tuple(x.shape)}")
    if x.shape[1] != in_shape[0]:
        raise CifarlabError(f"expected {in_shape[0]} channels {expected}, got {x.shape[1]} (shape {tuple(x.shape)})")
    if tuple(x.shape[1:]) != tuple(in_shape):
        raise CifarlabError(f"expected images of size {in_shape[1]}x{in_shape[2]} {expected}, got "
                            f"{tuple(x.shape)}{hint}")


def check_range(x: torch.Tensor, first_only: bool = False) -> None:
    """A one-line error when float images on the CPU are clearly not in [0, 1]; `first_only`
    looks at the first image alone (the usual mistakes concern a whole dataset)."""
    if x.device.type != "cpu" or x.numel() == 0 or torch.compiler.is_compiling():
        return  # on accelerators, and inside torch.export/compile, the range is a contract
    low, high = torch.aminmax(x[0] if first_only else x)
    low, high = float(low), float(high)
    if low < LOW or high > HIGH:
        scale = " (images scaled 0-255? divide by 255)" if high > HIGH else " (normalised images? undo the normalisation)"
        raise CifarlabError(f"expected float images in [0, 1], got values from {low:.3g} to {high:.3g}{scale}")


def as_float32(x: torch.Tensor, range_check: str = "full") -> torch.Tensor:
    """uint8 scaled by 1/255; other floats converted to float32 and, on the CPU, range-checked
    (`range_check`: 'full', 'first' or 'none')."""
    if x.dtype == torch.uint8:
        return x / 255  # one pass to float32, the same values as x.float().div_(255)
    if range_check != "none":
        check_range(x, first_only=range_check == "first")
    return x if x.dtype == torch.float32 else x.float()
