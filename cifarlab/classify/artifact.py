"""The trained classifier as a self-contained module, its checkpoint and its export.

`model.pt` (format ``cifarlab-classify/1``, loaded with ``weights_only=True``) holds the state
dict and what rebuilds the module; `model.pt2` is a `torch.export` program that plain PyTorch
loads without cifarlab::

    net = torch.export.load("run/model.pt2").module()
    logits = net(images)            # float (N, 3, 32, 32) in [0, 1] -> (N, 10)
"""
from __future__ import annotations

import inspect
from pathlib import Path

import torch
import torch.nn as nn

from .. import checkpoints
from ..errors import CifarlabError
from ..io import _atomic
from ..models import create_model
from ..models.registry import model_builder

FORMAT = "cifarlab-classify/1"
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SIZE = 32


class ImageClassifier(nn.Module):
    """Input check and normalisation in front of a registry network, so callers hand in plain
    images: float (N, 3, 32, 32) in [0, 1] (or uint8, scaled by 1/255), logits out. With
    `tta` the logits average the image and its mirror image (test-time flip augmentation)."""

    def __init__(self, net: nn.Module, classes: list[str], mean=CIFAR10_MEAN, std=CIFAR10_STD, tta: bool = False):
        super().__init__()
        self.net, self.classes, self.tta = net, list(classes), tta
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def check_input(self, x) -> None:
        expected = f"(N, 3, {IMAGE_SIZE}, {IMAGE_SIZE})"
        if not isinstance(x, torch.Tensor):
            raise CifarlabError(f"expected a tensor of images {expected}, got {type(x).__name__}")
        if not (x.is_floating_point() or x.dtype == torch.uint8):
            raise CifarlabError(f"expected float images in [0, 1] or uint8 images, got dtype {x.dtype}")
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (IMAGE_SIZE, IMAGE_SIZE):
            raise CifarlabError(f"expected a batch of RGB images {expected}, got shape {tuple(x.shape)} "
                                f"(resize other sizes with cifarlab.data.fit_to_size)")

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div(255)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.normalize(x)
        if self.tta and not self.training:
            return (self.net(x) + self.net(x.flip(-1))) / 2
        return self.net(x)


def normalisation_for(pretrained: bool) -> tuple[tuple, tuple]:
    return (IMAGENET_MEAN, IMAGENET_STD) if pretrained else (CIFAR10_MEAN, CIFAR10_STD)


def build_classifier(model: str, model_kwargs: dict, classes: list[str], pretrained: bool = False,
                     tta: bool = False) -> ImageClassifier:
    kwargs = {"num_classes": len(classes), **model_kwargs}
    if pretrained:
        if "pretrained" not in inspect.signature(model_builder(model, "classify")).parameters:
            raise CifarlabError(f"--pretrained needs --model resnet18_tv (ImageNet weights); {model!r} has none")
        kwargs["pretrained"] = True
    net = create_model(model, task="classify", **kwargs)
    mean, std = normalisation_for(pretrained)
    return ImageClassifier(net, classes, mean, std, tta)


def checkpoint(model: ImageClassifier, model_name: str, model_kwargs: dict, config: dict, **extra) -> dict:
    state = model.state_dict()
    return {"format": FORMAT, "model": model_name, "model_kwargs": dict(model_kwargs),
            "classes": list(model.classes), "tta": bool(model.tta),
            "mean": model.mean.flatten().tolist(), "std": model.std.flatten().tolist(),
            "state_dict": {k: v.detach().cpu().clone() for k, v in state.items()},
            "config": config, **extra}



def read_checkpoint(path) -> dict:
    """A classify checkpoint (``weights_only=True``); anything else is a one-line error."""
    return checkpoints.read_checkpoint(path, FORMAT)


def build_from_checkpoint(ckpt: dict) -> ImageClassifier:
    """The classifier of a checkpoint dict, in eval mode (no ImageNet download: the weights are here)."""
    net = create_model(ckpt["model"], task="classify", num_classes=len(ckpt["classes"]), **ckpt["model_kwargs"])
    model = ImageClassifier(net, ckpt["classes"], ckpt["mean"], ckpt["std"], ckpt.get("tta", False))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CifarlabError(f"checkpoint does not fit model {ckpt['model']!r}: {str(e).splitlines()[0]}") from None
    return model.eval().requires_grad_(False)


def load_run(run_dir) -> ImageClassifier:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CifarlabError(f"run folder {str(run_dir)!r} does not exist")
    return build_from_checkpoint(read_checkpoint(run_dir / "model.pt"))


def export_program(model: ImageClassifier, path) -> Path:
    """A `torch.export` program of the whole classifier (normalisation and TTA inside), dynamic batch."""
    model = model.eval()
    example = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    return _atomic(Path(path), lambda tmp: torch.export.save(program, tmp))
