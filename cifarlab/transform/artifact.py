"""Saving, exporting and loading a trained transform network.

`model.pt` holds the state dict and everything needed to rebuild the module (loaded with
``weights_only=True``); `model.pt2` is a `torch.export` program that plain PyTorch loads:
``torch.export.load("model.pt2").module()``.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .. import checkpoints
from ..errors import CifarlabError
from ..io import _atomic
from ..models import create_model

FORMAT = "cifarlab-transform/1"
INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.uint8)


class ImageTransformNet(nn.Module):
    """A trained network behind an input check: float (N, C, H, W) in [0, 1] or uint8
    (scaled by 1/255) in, the pipeline's output out."""

    def __init__(self, net: nn.Module, in_shape, out_shape, pipeline: str = ""):
        super().__init__()
        self.net = net
        self.in_shape, self.out_shape, self.pipeline = tuple(in_shape), tuple(out_shape), pipeline

    def check_input(self, x: torch.Tensor) -> None:
        if (isinstance(x, torch.Tensor) and x.dtype in INPUT_DTYPES and x.dim() == 4
                and x.shape[1:] == self.in_shape):
            return  # the common case, kept cheap: at batch size 1 this check is on the hot path
        expected = f"(N, {', '.join(map(str, self.in_shape))})"
        if not isinstance(x, torch.Tensor):
            raise CifarlabError(f"expected a tensor of images {expected}, got {type(x).__name__}")
        if x.dtype not in INPUT_DTYPES:
            raise CifarlabError(f"expected float images in [0, 1] or uint8 images, got dtype {x.dtype}")
        if x.dim() != 4:
            raise CifarlabError(f"expected a batch of images {expected}, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_shape[0]:
            raise CifarlabError(f"expected {self.in_shape[0]} channels {expected}, got {x.shape[1]} "
                                f"(shape {tuple(x.shape)})")
        raise CifarlabError(f"expected images of size {self.in_shape[1]}x{self.in_shape[2]} {expected}, "
                            f"got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if x.dtype == torch.uint8:
            x = x / 255  # one pass to float32, the same values as x.float().div_(255)
        return self.net(x)


def checkpoint(model_name: str, model_kwargs: dict, net: nn.Module, in_shape, out_shape, pipeline: str,
               config: dict, **extra) -> dict:
    return {"format": FORMAT, "model": model_name, "model_kwargs": model_kwargs,
            "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
            "in_shape": list(in_shape), "out_shape": list(out_shape), "pipeline": pipeline,
            "config": config, **extra}



def read_checkpoint(path) -> dict:
    return checkpoints.read_checkpoint(path, FORMAT)


def build_from_checkpoint(ckpt: dict) -> ImageTransformNet:
    net = create_model(ckpt["model"], in_shape=tuple(ckpt["in_shape"]), out_shape=tuple(ckpt["out_shape"]),
                       **ckpt["model_kwargs"])
    try:
        net.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CifarlabError(f"checkpoint does not fit model {ckpt['model']!r}: {str(e).splitlines()[0]}") from None
    model = ImageTransformNet(net, ckpt["in_shape"], ckpt["out_shape"], ckpt.get("pipeline", ""))
    return model.eval().requires_grad_(False)


def export_program(net: nn.Module, in_shape, path) -> Path:
    """A `torch.export` program with a dynamic batch size."""
    net = net.eval()
    example = torch.rand(2, *in_shape)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(net, (example,), dynamic_shapes=({0: batch},))
    return _atomic(Path(path), lambda tmp: torch.export.save(program, tmp))
