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
import torch.nn.functional as F

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
    images: uint8 or float (N, 3, 32, 32) in [0, 1] (the contract of `cifarlab.inputs`), logits out.

    Test-time augmentation (eval mode only): with `tta` the logits average the image and its
    mirror image; with `tta_translate` = p as well, airbench's level-2 TTA: that pair gets half
    the weight, and the other half goes to the same pair shifted p px up-left and p px
    down-right (reflected border), six views in all."""

    def __init__(self, net: nn.Module, classes: list[str], mean=CIFAR10_MEAN, std=CIFAR10_STD, tta: bool = False,
                 tta_translate: int = 0):
        super().__init__()
        self.net, self.classes, self.tta, self.tta_translate = net, list(classes), tta, int(tta_translate)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1] (float32) -> the network's normalised input."""
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:] if self.training and x.dim() == 4 else (IMAGE_SIZE, IMAGE_SIZE)  # --progressive
        check_batch(x, (3, *size), " (resize other sizes with cifarlab.data.fit_to_size)")
        if x.shape[0] == 0:
            return torch.zeros((0, len(self.classes)), dtype=torch.float32, device=x.device)
        x = self.normalize(as_float32(x, "full"))
        if self.tta and not self.training:
            return self.averaged_views(x)
        return self.net(x)

    def mirror_average(self, x: torch.Tensor) -> torch.Tensor:
        return (self.net(x) + self.net(x.flip(-1))) / 2

    def averaged_views(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.mirror_average(x)
        if not self.tta_translate:
            return logits
        shifted = [self.mirror_average(view) for view in translated_views(x, self.tta_translate)]
        return (logits + (shifted[0] + shifted[1]) / 2) / 2


def translated_views(x: torch.Tensor, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch moved `shift` px towards the top-left and towards the bottom-right corner,
    the uncovered border filled by reflection (airbench's translate TTA)."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (shift,) * 4, mode="reflect")
    return padded[..., :h, :w], padded[..., 2 * shift:2 * shift + h, 2 * shift:2 * shift + w]


WRAPPER_ARGS = ("tta_translate",)   # model args that configure ImageClassifier, not the network


def split_model_args(model_kwargs: dict) -> tuple[dict, dict]:
    """(the network's arguments, the wrapper's): `--model-args` may hold both."""
    net_args = {k: v for k, v in model_kwargs.items() if k not in WRAPPER_ARGS}
    wrapper_args = {k: v for k, v in model_kwargs.items() if k in WRAPPER_ARGS}
    shift = wrapper_args.get("tta_translate", 0)
    if not (isinstance(shift, int) and not isinstance(shift, bool) and 0 <= shift <= 4):
        raise CifarlabError(f"model argument tta_translate must be a whole number of pixels from 0 to 4, got {shift!r}")
    return net_args, wrapper_args


def normalisation_for(pretrained: bool) -> tuple[tuple, tuple]:
    return (IMAGENET_MEAN, IMAGENET_STD) if pretrained else (CIFAR10_MEAN, CIFAR10_STD)


def build_classifier(model: str, model_kwargs: dict, classes: list[str], pretrained: bool = False,
                     tta: bool = False) -> ImageClassifier:
    """The registry network `model` behind the wrapper; `model_kwargs` may include the wrapper's
    `tta_translate` (pixels of airbench's translate TTA; 0: none)."""
    net_args, wrapper_args = split_model_args(model_kwargs)
    kwargs = {"num_classes": len(classes), **net_args}
    if pretrained:
        if "pretrained" not in inspect.signature(model_builder(model, "classify")).parameters:
            raise CifarlabError(f"--pretrained needs --model resnet18_tv (ImageNet weights); {model!r} has none")
        kwargs["pretrained"] = True
    net = create_model(model, task="classify", **kwargs)
    mean, std = normalisation_for(pretrained)
    return ImageClassifier(net, classes, mean, std, tta, **wrapper_args)


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
    net_args, wrapper_args = split_model_args(ckpt["model_kwargs"])
    net = create_model(ckpt["model"], task="classify", num_classes=len(ckpt["classes"]), **net_args)
    try:
        model = ImageClassifier(net, ckpt["classes"], ckpt["mean"], ckpt["std"], bool(ckpt.get("tta", False)),
                                **wrapper_args)
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
