"""Figures for run reports (matplotlib, headless)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ..io import save_figure  # noqa: E402


def _show(ax, image: torch.Tensor, title: str | None = None):
    # numpy, not the tensor: matplotlib asks __array__ for copy=, which a tensor's does not take
    image = image.detach().float().cpu().clamp(0, 1)
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image[:3].permute(1, 2, 0).numpy())
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def samples_figure(inputs, targets, outputs, path, count: int = 8):
    """Rows: input, ground truth, model output, |error| x10, for the same held-out images."""
    count = min(count, len(inputs))
    fig, axes = plt.subplots(4, count, figsize=(1.3 * count, 5.6), squeeze=False)
    labels = ("input", "ground truth", "model", "|error| x10")
    for i in range(count):
        error = (outputs[i] - targets[i]).abs().mul(10).mean(0, keepdim=True)
        for row, image in enumerate((inputs[i], targets[i], outputs[i], error)):
            _show(axes[row][i], image)
            if i == 0:
                axes[row][i].set_ylabel(labels[row], fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def curves_figure(history: list[dict], path, series: dict[str, list[str]], log_scale: dict[str, bool] | None = None):
    """One panel per entry of `series` (title -> keys of the history rows), epochs on x."""
    fig, axes = plt.subplots(1, len(series), figsize=(5 * len(series), 3.6), squeeze=False)
    epochs = [row["epoch"] for row in history]
    for ax, (title, keys) in zip(axes[0], series.items()):
        for key in keys:
            values = [row.get(key) for row in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, marker=".", label=key)
        if (log_scale or {}).get(title):
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
