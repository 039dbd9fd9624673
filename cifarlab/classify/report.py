"""What a classification run leaves behind: test metrics, figures, the export and report.md."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ..io import save_figure, write_json, write_text  # noqa: E402
from ..report import curves_figure  # noqa: E402
from .artifact import export_program  # noqa: E402
from .trainer import evaluate  # noqa: E402


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, classes: int) -> torch.Tensor:
    """counts[true, predicted]."""
    return torch.bincount(labels * classes + predictions, minlength=classes * classes).view(classes, classes)


def score(model, images, labels, classes: list[str], device) -> dict:
    started = time.perf_counter()
    result = evaluate(model, images, labels, device)
    seconds = time.perf_counter() - started
    counts = confusion_matrix(labels.cpu(), result["predictions"], len(classes))
    per_class = (counts.diag().double() / counts.sum(1).clamp(min=1)).tolist()
    return {"accuracy": result["accuracy"], "loss": result["loss"], "images": len(images),
            "per_class_accuracy": dict(zip(classes, per_class)), "confusion": counts.tolist(),
            "inference_images_per_second": len(images) / max(seconds, 1e-9)}


def confusion_figure(counts, classes: list[str], path, title: str = "") -> None:
    counts = torch.as_tensor(counts).double()
    share = counts / counts.sum(1, keepdim=True).clamp(min=1)
    size = max(4.5, 0.55 * len(classes))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(share.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def finish_run(run_dir: Path, model, data, config, history, stop_reason, elapsed, device, meta, quiet=False) -> dict:
    eval_set, eval_name = data.evaluation_set()
    scores = score(model, eval_set.images, eval_set.labels, data.classes, device)
    trained = [row for row in history if row.get("epoch_seconds")]
    images_seen = sum(row["images_per_second"] * row["epoch_seconds"] for row in trained)
    best = max(history, key=lambda r: r.get("val_accuracy", -1))
    metrics = {
        "test_accuracy": scores["accuracy"], "test_loss": scores["loss"], "evaluated_on": eval_name,
        "test_images": scores["images"], "per_class_accuracy": scores["per_class_accuracy"],
        "best_val_accuracy": best.get("val_accuracy"), "best_epoch": best["epoch"],
        "recipe": config.recipe, "model": config.model, "model_args": config.model_args, "data": data.pool.name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_images": len(data.train_index), "val_images": len(data.val_index),
        "epochs": len(history), "train_seconds": elapsed, "stopped_by": stop_reason,
        "train_images_per_second": images_seen / max(elapsed, 1e-9),
        "inference_images_per_second": scores["inference_images_per_second"], "tta": tta_views(config),
        "confusion": scores["confusion"], **meta,
    }
    model.cpu()
    try:
        export_program(model, run_dir / "model.pt2")
        metrics["export"] = "model.pt2"
    except Exception as e:  # an export failure must not lose the trained weights in model.pt
        metrics["export"] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    write_json(run_dir / "metrics.json", metrics)
    curves_figure(history, run_dir / "curves.png", {"loss": ["train_loss", "val_loss"],
                                                    "accuracy": ["train_accuracy", "val_accuracy"]})
    confusion_figure(scores["confusion"], data.classes, run_dir / "confusion.png",
                     f"{eval_name}: {scores['accuracy']:.1%} of {scores['images']}")
    write_report(run_dir, metrics, config)
    if not quiet:
        print(f"{eval_name} accuracy {scores['accuracy']:.2%} on {scores['images']} images — {len(history)} epochs in "
              f"{elapsed:.1f}s ({stop_reason}); report: {run_dir / 'report.md'}", file=sys.stderr)
    return metrics


def tta_views(config) -> str | None:
    """What the scores average over: None, the flip pair, or airbench's six flip+translate views."""
    if not config.tta:
        return None
    shift = config.model_args.get("tta_translate", 0)
    return f"mirror + {shift} px translate, 6 views" if shift else "mirror, 2 views"


def reproduce_command(config) -> str:
    """The train command for this config: the recipe plus every setting that differs from it."""
    from .recipes import recipe_config
    base = recipe_config(config.recipe)
    parts = [f"cifarlab classify train --recipe {config.recipe}"]
    for name, value in config.to_dict().items():
        if name in ("recipe", "logger", "pretrained") or value == getattr(base, name):
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else f"--no-{name.replace('_', '-')}")
        elif isinstance(value, dict):
            parts.append(f"{flag} '{','.join(f'{k}={v}' for k, v in value.items())}'")
        elif value is not None:
            parts.append(f"{flag} {value}")
    if config.pretrained:
        parts.append("--pretrained")
    return " ".join(parts)


def write_report(run_dir: Path, metrics: dict, config) -> Path:
    per_class = " | ".join(f"{name} {acc:.0%}" for name, acc in metrics["per_class_accuracy"].items())
    tta_note = f" (test-time augmentation: {metrics['tta']})" if metrics["tta"] else ""
    lines = [
        f"# cifarlab classify run: recipe `{config.recipe}`, model `{config.model}`", "",
        f"Data: {metrics['data']} — {metrics['train_images']} training, {metrics['val_images']} validation images "
        f"(seed {config.seed}); scored on the {metrics['evaluated_on']} set ({metrics['test_images']} images).", "",
        "| metric | value |", "|---|---|",
        f"| accuracy ({metrics['evaluated_on']}) | {metrics['test_accuracy']:.2%} |",
        f"| best validation accuracy, per-epoch check (no TTA) | {metrics['best_val_accuracy']:.2%} "
        f"(epoch {metrics['best_epoch']}) |",
        f"| parameters | {metrics['parameters']:,} |",
        f"| training time | {metrics['train_seconds']:.1f} s, {metrics['epochs']} epochs, stopped by "
        f"{metrics['stopped_by']} |",
        f"| training throughput | {metrics['train_images_per_second']:.0f} images/s on {metrics['device']}"
        f" x {metrics['processes']} |",
        f"| inference throughput | {metrics['inference_images_per_second']:.0f} images/s"
        f"{tta_note} |",
        f"| export | {metrics['export']} |", "",
        f"Per class: {per_class}", "",
        "## Settings", "",
        f"{config.optimizer} lr {config.lr:g}, weight decay {config.weight_decay:g}, batch {config.batch_size}, "
        f"schedule {config.schedule}, label smoothing {config.label_smoothing:g}, augmentation `{config.augment}`, "
        f"model args `{config.model_args or {}}`; torch {metrics['torch']}.", "",
        "## Curves", "", "![curves](curves.png)", "", "## Confusion matrix", "", "![confusion](confusion.png)", "",
        f"Reproduce: `{reproduce_command(config)}`", "",
    ]
    return write_text(run_dir / "report.md", "\n".join(lines))
