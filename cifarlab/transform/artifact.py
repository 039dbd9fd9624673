"""Saving, exporting and loading a trained transform network.

`model.pt` holds the state dict and everything needed to rebuild the module (loaded with
``weights_only=True``: safe to load from anyone); `model.pt2` is a `torch.export` program that
plain PyTorch loads: ``torch.export.load("model.pt2").module()`` — only for files you trust,
since `torch.export.load` may unpickle parts of the archive (see docs/reliability.md).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .. import checkpoints
from ..errors import CifarlabError
from ..inputs import INPUT_DTYPES, as_float32, check_batch
from ..models import create_model

FORMAT = "cifarlab-transform/1"


class ImageTransformNet(nn.Module):
    """A trained network behind the input contract of `cifarlab.inputs`: uint8 or float
    (N, C, H, W) images in [0, 1] in, the pipeline's output (float32) out."""

    def __init__(self, net: nn.Module, in_shape, out_shape, pipeline: str = ""):
        super().__init__()
        self.net = net
        self.in_shape, self.out_shape, self.pipeline = tuple(in_shape), tuple(out_shape), pipeline
        self.range_check = "none"   # the value range is a contract here; 'first' or 'full' check it (cifarlab.inputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (isinstance(x, torch.Tensor) and x.dtype in INPUT_DTYPES and x.dim() == 4
                and x.shape[1:] == self.in_shape):
            check_batch(x, self.in_shape)  # the common case above stays cheap: at batch 1 it is on the hot path
        if x.shape[0] == 0:
            return torch.zeros((0, *self.out_shape), dtype=torch.float32, device=x.device)
        return self.net(as_float32(x, self.range_check))


def checkpoint(model_name: str, model_kwargs: dict, net: nn.Module, in_shape, out_shape, pipeline: str,
               config: dict, **extra) -> dict:
    return {"format": FORMAT, "model": model_name, "model_kwargs": model_kwargs,
            "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
            "in_shape": list(in_shape), "out_shape": list(out_shape), "pipeline": pipeline,
            "config": config, **extra}



def read_checkpoint(path) -> dict:
    return checkpoints.read_checkpoint(path, FORMAT)


def build_from_checkpoint(ckpt: dict) -> ImageTransformNet:
    """The network of a checkpoint that `read_checkpoint` accepted, in eval mode."""
    net = create_model(ckpt["model"], in_shape=tuple(ckpt["in_shape"]), out_shape=tuple(ckpt["out_shape"]),
                       **ckpt["model_kwargs"])
    try:
        net.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError, TypeError) as e:
        raise CifarlabError(f"checkpoint does not fit model {ckpt['model']!r}: {str(e).splitlines()[0]}") from None
    model = ImageTransformNet(net, ckpt["in_shape"], ckpt["out_shape"], ckpt.get("pipeline", ""))
    return model.eval().requires_grad_(False)


def export_program(net: nn.Module, in_shape, path) -> Path:
    """A `torch.export` program with a dynamic batch size (see `cifarlab.export`)."""
    from ..export import save_program
    return save_program(net.eval(), torch.rand(2, *in_shape), path)
