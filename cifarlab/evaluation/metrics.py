"""Fidelity of a transform model's outputs against ground truth (torchmetrics)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from ..training.losses import ssim_kernel

COSINE_THRESHOLD = 0.95


def data_range(target: torch.Tensor) -> float:
    """1.0 for images in [0, 1]; the target's own range for pipelines that leave it (normalize)."""
    low, high = float(target.min()), float(target.max())
    return 1.0 if low >= 0.0 and high <= 1.0 else high - low


def fidelity(pred: torch.Tensor, target: torch.Tensor) -> dict:
    """MSE, PSNR (dB), SSIM and the share of images whose cosine similarity with the
    ground truth is at least 0.95 (the reference reports' 'accuracy')."""
    pred, target = pred.detach().double().cpu(), target.detach().double().cpu()
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != ground truth shape {tuple(target.shape)}")
    rng = data_range(target)
    mse = F.mse_loss(pred, target).item()
    psnr = peak_signal_noise_ratio(pred, target, data_range=rng).item() if mse > 0 else float("inf")
    ssim = structural_similarity_index_measure(pred.float(), target.float(), data_range=rng,
                                               kernel_size=ssim_kernel(*target.shape[-2:])).item()
    cosine = F.cosine_similarity(pred.flatten(1), target.flatten(1), dim=1, eps=1e-12)
    return {"mse": mse, "psnr": psnr, "ssim": ssim,
            "cosine_accuracy": (cosine >= COSINE_THRESHOLD).double().mean().item(),
            "cosine_mean": cosine.mean().item(), "images": int(pred.shape[0])}


@torch.inference_mode()
def predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 1024,
            device: torch.device | str = "cpu") -> torch.Tensor:
    """Run `model` over float images in batches; outputs on the CPU."""
    model.eval()
    return torch.cat([model(images[i:i + batch_size].to(device)).float().cpu()
                      for i in range(0, len(images), batch_size)])
