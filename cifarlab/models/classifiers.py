"""CIFAR-10 classifiers, registered under task "classify".

Every network here maps *normalised* float images (N, 3, 32, 32) to logits (N, classes);
normalisation and the input check live in `cifarlab.classify.artifact.ImageClassifier`.

- ``baseline_cnn``: the reference report's starting point, two convolutions flattened into one
  linear layer (~23 k parameters).
- ``deep_cnn``: the report's final network, five conv-BN-pool-dropout stages (3-64-...-1024),
  then global average pooling; any widths and activation.
- ``resnet_bottleneck``: a small pre-activation-free ResNet of bottleneck blocks (the report's
  future work), for 32x32 inputs.
- ``fastnet``: airbench94's network (KellerJordan/cifar10-airbench, legacy/airbench94.py): a
  frozen 2x2 patch-whitening convolution initialised from the data, GELU, three groups of
  conv-maxpool-BN-GELU-conv-BN-GELU with identity-initialised (dirac) filters and BatchNorm of
  fixed scale 1 (momentum 0.4 in PyTorch's sense, airbench's 0.6), a global max-pool and a
  bias-free linear layer scaled by 1/9. ``widths=(64, 256, 256)`` is airbench94's size; narrower
  widths fit a CPU budget.
- ``resnet18_tv``: torchvision's ResNet-18 (ImageNet weights with ``pretrained=True``), its
  first max-pool dropped so 32x32 inputs keep a 16x16 map.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import CifarlabError
from .registry import register_model

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "gelu": nn.GELU}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise CifarlabError(f"unknown activation {name!r}; valid activations: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def _widths(widths, count: int | None = None) -> tuple[int, ...]:
    """Accepts a tuple or the CLI's '64-128-256' spelling."""
    if isinstance(widths, str):
        try:
            widths = [int(w) for w in widths.replace("/", "-").split("-") if w]
        except ValueError:
            raise ValueError(f"widths must look like 64-128-256, got {widths!r}") from None
    widths = tuple(int(w) for w in widths)
    if count is not None and len(widths) != count:
        raise ValueError(f"expected {count} widths, got {len(widths)}")
    if not widths or min(widths) < 1:
        raise ValueError(f"widths must be positive integers, got {widths}")
    return widths


# ----------------------------------------------------------------------------- baseline


@register_model("baseline_cnn", task="classify")
def baseline_cnn(num_classes: int = 10, widths=(16, 28), activation: str = "relu") -> nn.Module:
    """conv5x5 -> act -> pool -> conv3x3 -> act -> pool -> linear: 23,206 parameters."""
    c1, c2 = _widths(widths, 2)
    return nn.Sequential(
        nn.Conv2d(3, c1, 5, padding=2), make_activation(activation), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), make_activation(activation), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c2 * 8 * 8, num_classes))


# ----------------------------------------------------------------------------- deep CNN


class ConvStage(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, activation: str, dropout: float):
        super().__init__(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         make_activation(activation), nn.MaxPool2d(2), nn.Dropout(dropout))


@register_model("deep_cnn", task="classify")
def deep_cnn(num_classes: int = 10, widths="64-128-256-512-1024", activation: str = "leaky_relu",
             dropout: float = 0.2) -> nn.Module:
    """The report's 'seed004' network; at most five stages (each halves the 32x32 map)."""
    widths = _widths(widths)
    if len(widths) > 5:
        raise ValueError(f"at most 5 stages fit a 32x32 image, got {len(widths)} widths")
    chans = (3, *widths)
    stages = [ConvStage(a, b, activation, dropout) for a, b in zip(chans, chans[1:])]
    return nn.Sequential(*stages, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], num_classes))


# ----------------------------------------------------------------------------- ResNet (bottleneck)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (stride) -> 1x1 expand (x4), plus a projected shortcut when shapes change."""
    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int, activation: str):
        super().__init__()
        c_out = width * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(c_in, width, 1, bias=False), nn.BatchNorm2d(width), make_activation(activation),
            nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(width),
            make_activation(activation),
            nn.Conv2d(width, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        nn.init.zeros_(self.body[-1].weight)  # each block starts as the identity: trains deeper nets faster
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        self.act = make_activation(activation)

    def forward(self, x):
        return self.act(self.body(x) + self.shortcut(x))


@register_model("resnet_bottleneck", task="classify")
def resnet_bottleneck(num_classes: int = 10, widths="16-32-64", blocks: int = 2,
                      activation: str = "relu") -> nn.Module:
    """Stages of `blocks` bottleneck blocks; each stage after the first halves the map."""
    widths = _widths(widths)
    layers = [nn.Conv2d(3, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]),
              make_activation(activation)]
    c_in = widths[0]
    for i, width in enumerate(widths):
        for j in range(int(blocks)):
            layers.append(Bottleneck(c_in, width, 2 if (i > 0 and j == 0) else 1, activation))
            c_in = width * Bottleneck.expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------- fastnet (airbench-style)


class FrozenScaleBatchNorm(nn.BatchNorm2d):
    """BatchNorm with a fixed scale of 1 and a learned shift: the scale is redundant before a
    conv and learning it only adds noise. High momentum because short runs have few steps."""

    def __init__(self, channels: int, momentum: float = 0.4):
        super().__init__(channels, eps=1e-12, momentum=momentum)
        self.weight.requires_grad_(False)


class WhiteningConv(nn.Conv2d):
    """A k x k convolution whose filters are the eigenvectors of the training patches' second
    moment, scaled by 1/sqrt(eigenvalue), in + and - pairs (so a following GELU keeps both
    signs): its output is white on the data it was fit on. As in airbench the moment is not
    centred (the input is already normalised to zero mean) and the filters come largest
    eigenvalue first. Fixed after `init_from_data`; only its bias learns (airbench94: for its
    first 3 epochs: `whiten_bias_epochs` in cifarlab.classify.config)."""

    def __init__(self, kernel_size: int = 2):
        n = 3 * kernel_size * kernel_size
        super().__init__(3, 2 * n, kernel_size, padding=0, bias=True)
        self.weight.requires_grad_(False)

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """`images`: normalised float (N, 3, H, W); a few thousand are plenty (airbench: 5,000)."""
        k = self.kernel_size[0]
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)          # N, C, H', W', k, k
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * k * k)
        moment = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(moment)             # ascending
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
        filters = (eigenvectors.T / (eigenvalues + eps).sqrt()[:, None]).reshape(-1, 3, k, k)
        self.weight.copy_(torch.cat([filters, -filters]).to(self.weight))
        self.bias.zero_()


class ConvGroup(nn.Module):
    """conv3x3 -> maxpool -> BN -> GELU -> conv3x3 -> BN -> GELU (pooling before the norm is cheaper)."""

    def __init__(self, c_in: int, c_out: int, activation: str, bn_momentum: float):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = FrozenScaleBatchNorm(c_out, bn_momentum)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = FrozenScaleBatchNorm(c_out, bn_momentum)
        self.act = make_activation(activation)
        for conv in (self.conv1, self.conv2):  # identity-initialise the first filters: an implicit residual
            nn.init.dirac_(conv.weight[:min(conv.in_channels, conv.out_channels)])

    def forward(self, x):
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class FastNet(nn.Module):
    def __init__(self, num_classes: int, widths, whiten_kernel: int, activation: str, bn_momentum: float,
                 logit_scale: float):
        super().__init__()
        self.whiten = WhiteningConv(whiten_kernel)
        self.act = make_activation(activation)
        chans = (self.whiten.out_channels, *widths)
        self.groups = nn.Sequential(*[ConvGroup(a, b, activation, bn_momentum) for a, b in zip(chans, chans[1:])])
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(widths[-1], num_classes, bias=False)
        self.logit_scale = logit_scale

    def init_from_data(self, images: torch.Tensor) -> None:
        self.whiten.init_from_data(images)

    def forward(self, x):
        x = self.groups(self.act(self.whiten(x)))
        return self.head(self.pool(x).flatten(1)) * self.logit_scale


@register_model("fastnet", task="classify")
def fastnet(num_classes: int = 10, widths="32-64-128", whiten_kernel: int = 2, activation: str = "gelu",
            bn_momentum: float = 0.4, logit_scale: float = 1 / 9) -> nn.Module:
    """airbench-style net; widths 64-256-256 is the airbench94 size (~2 M parameters)."""
    return FastNet(num_classes, _widths(widths, 3), int(whiten_kernel), activation, bn_momentum, logit_scale)


# ----------------------------------------------------------------------------- torchvision ResNet-18


@register_model("resnet18_tv", task="classify")
def resnet18_tv(num_classes: int = 10, pretrained: bool = False) -> nn.Module:
    from torchvision.models import ResNet18_Weights, resnet18
    if pretrained:
        try:
            net = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)
        except Exception as e:
            raise CifarlabError(
                "--pretrained needs torchvision's ResNet-18 ImageNet weights, downloaded into $TORCH_HOME "
                f"(~45 MB) on first use, and they cannot be had here ({type(e).__name__}): run once with network "
                "access, or copy resnet18-f37072fd.pth into $TORCH_HOME/hub/checkpoints/") from None
    else:
        net = resnet18()
    net.maxpool = nn.Identity()
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    return net
