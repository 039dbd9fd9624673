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
UINT8_CHUNK = 256   # uint8 input is converted and run in chunks of this many images (see forward)


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
        if x.dtype == torch.uint8 and x.device.type == "cpu" and x.shape[0] > UINT8_CHUNK:
            return self._in_chunks(x, torch.float32, lambda y: y)
        return self.net(as_float32(x, self.range_check))

    def to_uint8(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images in, uint8 images out: round(clamp(self(x), 0, 1) * 255), the rounding rule
        of `transform apply`; a 2-channel output keeps channel 0. Computed in chunks on the CPU."""
        if not (isinstance(x, torch.Tensor) and x.dtype == torch.uint8):
            raise CifarlabError(f"to_uint8 takes uint8 images, got {getattr(x, 'dtype', type(x).__name__)}")
        check_batch(x, self.in_shape)
        channels = self.out_shape[0] if self.out_shape[0] in (1, 3) else 1

        def rounded(y):
            return y[:, :channels].clamp_(0, 1).mul_(255).round_().to(torch.uint8)
        if x.device.type != "cpu":
            return rounded(self.net(as_float32(x)))
        return self._in_chunks(x, torch.uint8, rounded, channels)

    def _in_chunks(self, x, dtype, finish, channels=None):
        """On the CPU, a uint8 batch of 1024 converted to float32 at once is a fresh 12 MiB tensor:
        the allocator maps new pages for it on every call, and converting alone took about as long
        as the whole net on float input (uint8 path ~1.5x slower than float at batch 1024). In
        chunks of UINT8_CHUNK images the float copies are small and stay in cache. One float
        buffer serves every chunk of a call (a fresh tensor per chunk left the path at 1.09-1.53x
        the float one at batch 1024); it is made per call, so threads calling one model do not
        share it. Chunks of 256 rather than 128: 0.92-0.96x the float path in five benchmark runs,
        against 1.00-1.15x (fewer, larger calls into the network; BENCHMARKS.md). Converting, then
        `div_(255)`, gives the same values as `x / 255` (one IEEE division each)."""
        out = torch.empty((x.shape[0], channels or self.out_shape[0], *self.out_shape[1:]), dtype=dtype)
        buffer = torch.empty((min(UINT8_CHUNK, x.shape[0]), *x.shape[1:]), dtype=torch.float32)
        for start in range(0, x.shape[0], UINT8_CHUNK):
            chunk = x[start:start + UINT8_CHUNK]
            floats = buffer[:len(chunk)]
            floats.copy_(chunk).div_(255)
            out[start:start + UINT8_CHUNK] = finish(self.net(floats))
        return out


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
