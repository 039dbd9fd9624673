"""The trained classifier as a self-contained module, its checkpoint and its export.

`model.pt` (format ``cifarlab-classify/1``, loaded with ``weights_only=True``) holds the state
dict and what rebuilds the module; `model.pt2` is a `torch.export` program that plain PyTorch
loads without cifarlab (only for files you trust: see cifarlab.export)::

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
from ..inputs import as_float32, check_batch
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
    images: uint8 or float (N, 3, 32, 32) in [0, 1] (the contract of `cifarlab.inputs`), logits out. With
    `tta` the logits average the image and its mirror image (test-time flip augmentation)."""

    def __init__(self, net: nn.Module, classes: list[str], mean=CIFAR10_MEAN, std=CIFAR10_STD, tta: bool = False):
        super().__init__()
        self.net, self.classes, self.tta = net, list(classes), tta
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1] (float32) -> the network's normalised input."""
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_batch(x, (3, IMAGE_SIZE, IMAGE_SIZE), " (resize other sizes with cifarlab.data.fit_to_size)")
        if x.shape[0] == 0:
            return torch.zeros((0, len(self.classes)), dtype=torch.float32, device=x.device)
        x = self.normalize(as_float32(x, "full"))
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
    if not (len(ckpt["classes"]) >= 2 and all(isinstance(c, str) for c in ckpt["classes"])
            and len(ckpt["mean"]) == 3 and len(ckpt["std"]) == 3):
        raise CifarlabError(f"checkpoint of {ckpt['model']!r} is damaged: its classes, mean or std are malformed")
    net = create_model(ckpt["model"], task="classify", num_classes=len(ckpt["classes"]), **ckpt["model_kwargs"])
    try:
        model = ImageClassifier(net, ckpt["classes"], ckpt["mean"], ckpt["std"], bool(ckpt.get("tta", False)))
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise CifarlabError(f"checkpoint does not fit model {ckpt['model']!r}: {str(e).splitlines()[0]}") from None
    return model.eval().requires_grad_(False)


def load_run(run_dir) -> ImageClassifier:
    from .. import model_file
    return build_from_checkpoint(read_checkpoint(model_file(run_dir)))


def export_program(model: ImageClassifier, path) -> Path:
    """A `torch.export` program of the whole classifier (normalisation and TTA inside), dynamic batch."""
    from ..export import save_program
    return save_program(model.eval(), torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE), path)
