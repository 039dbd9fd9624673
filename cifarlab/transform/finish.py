"""What a run leaves behind after training: metrics, pictures, the export and the report."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..evaluation import fidelity, predict
from ..evaluation.format import db, sci
from ..io import write_json, write_text
from ..report import curves_figure, samples_figure
from .artifact import export_program

SAMPLE_COUNT = 8


def evaluate_net(net, inputs, targets, device) -> tuple[dict, torch.Tensor]:
    outputs = predict(net, inputs, device=device)
    return fidelity(outputs, targets), outputs


def finish_run(run_dir: Path, net, data, config, history, stop_reason, elapsed, device, quiet=False) -> dict:
    x_val, y_val = data.split("val")
    scores, outputs = evaluate_net(net, x_val, y_val, device)
    best = min(history, key=lambda r: r["val_loss" if config.monitor == "val" else "train_loss"])
    metrics = {
        **scores,
        "pipeline": data.pipeline.spec, "model": config.model, "data": data.images.name,
        "parameters": sum(p.numel() for p in net.parameters()),
        "train_images": len(data.train_index), "heldout_images": len(data.val_index),
        "epochs": sum(r["epoch"] > 0 for r in history), "best_epoch": best["epoch"], "train_seconds": elapsed,
        "stopped_by": stop_reason, "pipeline_is_linear": data.pipeline.is_linear(data.in_shape),
    }
    net.cpu()
    try:
        export_program(net, data.in_shape, run_dir / "model.pt2")
        metrics["export"] = "model.pt2"
    except Exception as e:  # an export failure must not lose the trained weights in model.pt
        metrics["export"] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    write_json(run_dir / "metrics.json", metrics)
    samples_figure(x_val[:SAMPLE_COUNT], y_val[:SAMPLE_COUNT], outputs[:SAMPLE_COUNT], run_dir / "samples.png")
    curves_figure(history, run_dir / "loss.png", {"MSE loss" if config.loss == "mse" else f"{config.loss} loss":
                                                  ["train_loss", "val_loss"]}, log_scale={"MSE loss": True})
    write_report(run_dir, metrics, config)
    if not quiet:
        print(f"held-out: PSNR {db(metrics['psnr'])}, SSIM {metrics['ssim']:.4f}, MSE {sci(metrics['mse'])}, "
              f"cosine>=0.95 {metrics['cosine_accuracy']:.1%} — {metrics['epochs']} epochs in "
              f"{elapsed:.1f}s ({stop_reason}); report: {run_dir / 'report.md'}", file=sys.stderr)
    return metrics


def write_report(run_dir: Path, metrics: dict, config, extra_sections: list[str] | None = None) -> Path:
    lines = [
        f"# cifarlab transform run: `{metrics['model']}` learns `{metrics['pipeline']}`", "",
        f"Data: {metrics['data']} — {metrics['train_images']} training images, "
        f"{metrics['heldout_images']} held-out images (seed {config.seed}).", "",
        "| metric (held-out) | value |", "|---|---|",
        f"| PSNR | {db(metrics['psnr'])} |",
        f"| SSIM | {metrics['ssim']:.5f} |",
        f"| MSE | {sci(metrics['mse'])} |",
        f"| cosine similarity ≥ 0.95 | {metrics['cosine_accuracy']:.2%} |",
        f"| parameters | {metrics['parameters']:,} |",
        f"| training time | {metrics['train_seconds']:.1f} s ({metrics['epochs']} epochs, best {metrics['best_epoch']}, "
        f"stopped by {metrics['stopped_by']}) |",
        "", "## Samples (input, ground truth, model, |error|×10)", "", "![samples](samples.png)", "",
        "## Loss", "", "![loss](loss.png)", "",
        f"Reproduce: `cifarlab transform train --data {config.data} --pipeline \"{config.pipeline}\" "
        f"--model {config.model}" + (f" --epochs {config.epochs}" if config.epochs else "")
        + (f" --time-budget {config.time_budget:g}" if config.time_budget else "")
        + (f" --patience {config.patience}" if config.patience else "") + f" --seed {config.seed}`", "",
    ]
    bench = run_dir / "bench.md"
    if bench.exists():
        lines += ["## Inference benchmark", "", bench.read_text(), ""]
    lines += extra_sections or []
    return write_text(run_dir / "report.md", "\n".join(lines))
