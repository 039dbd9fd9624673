"""Image losses: MSE, SSIM (torchmetrics) and a VGG16 perceptual loss."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure

from ..errors import CifarlabError

LOSSES = ("mse", "ssim", "perceptual")


def ssim_kernel(height: int, width: int) -> int:
    """torchmetrics' default 11-px window, shrunk (odd) for tiny outputs."""
    k = min(11, height, width)
    return k if k % 2 else k - 1


class SSIMLoss(nn.Module):
    def forward(self, pred, target):
        k = ssim_kernel(*target.shape[-2:])
        return 1 - structural_similarity_index_measure(pred, target, data_range=1.0, kernel_size=k)


class PerceptualLoss(nn.Module):
    """MSE plus the MSE of VGG16 features after conv layers 2, 7, 14, 21 and 28 (indices in
    `vgg16().features`); inputs upsampled to 224, channels replicated, ImageNet-normalised."""

    LAYERS = (2, 7, 14, 21, 28)

    def __init__(self):
        super().__init__()
        from torchvision.models import VGG16_Weights, vgg16
        try:
            features = vgg16(weights=VGG16_Weights.IMAGENET1K_V1).features
        except Exception as e:
            raise CifarlabError(
                "the perceptual loss needs torchvision's VGG16 ImageNet weights, which are downloaded "
                "into $TORCH_HOME the first time and need a network then "
                f"({type(e).__name__}); run once online or use --loss mse") from None
        self.features = features[: max(self.LAYERS) + 1].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def _prepare(self, x):
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def forward(self, pred, target):
        loss = F.mse_loss(pred, target)
        a, b = self._prepare(pred), self._prepare(target)
        for i, layer in enumerate(self.features):
            a, b = layer(a), layer(b)
            if i in self.LAYERS:
                loss = loss + F.mse_loss(a, b)
        return loss


def build_loss(name: str) -> nn.Module:
    if name == "mse":
        return nn.MSELoss()
    if name == "ssim":
        return SSIMLoss()
    if name == "perceptual":
        return PerceptualLoss()
    raise CifarlabError(f"unknown loss {name!r}; valid losses: {', '.join(LOSSES)}")
