"""Train several registry models on the same data, pipeline and time budget; tabulate them."""
from __future__ import annotations

from pathlib import Path

from ..errors import CifarlabError
from ..evaluation.format import db, sci
from ..io import read_json, write_text
from ..models import model_builder
from ..runs import RunFolder
from .config import TransformConfig
from .loop import train


def compare_models(names, data, data_root, pipeline, time_budget, epochs, seed, device, out: Path) -> Path:
    """One run per model in `out/<model>/`, then `out/compare.md`; `out` must be new or empty
    (an earlier comparison is never deleted)."""
    for name in names:
        model_builder(name)  # unknown names fail before any folder is made
    with RunFolder.create(out):
        return _compare(names, data, data_root, pipeline, time_budget, epochs, seed, device, out)


def _compare(names, data, data_root, pipeline, time_budget, epochs, seed, device, out: Path) -> Path:
    rows = []
    for name in names:
        run_dir = out / name
        config = TransformConfig(data=data, data_root=data_root, pipeline=pipeline, model=name,
                                 time_budget=time_budget, epochs=epochs, seed=seed, device=device,
                                 logger="none").validate()
        try:
            train(config, out=str(run_dir), quiet=True)
        except CifarlabError as e:
            rows.append(f"| `{name}` | — | — | — | — | — | — | not applicable: {e} |")
            continue
        m = read_json(run_dir / "metrics.json")
        psnr = float(m["psnr"]) if isinstance(m["psnr"], str) else m["psnr"]
        rows.append(f"| `{name}` | {m['parameters']:,} | {db(psnr)} | {m['ssim']:.4f} | {sci(m['mse'])} | "
                    f"{m['cosine_accuracy']:.1%} | {m['train_seconds']:.0f} s / {m['epochs']} ep | |")
    text = "\n".join([
        f"# Model comparison on `{pipeline}`", "",
        f"Data: `{data}`, seed {seed}, {time_budget:g} s training budget each (Adam lr 1e-3, batch 32, "
        f"MSE, early stopping off); metrics on the held-out split.", "",
        "| model | params | PSNR | SSIM | MSE | cos≥0.95 | time / epochs | note |",
        "|---|---|---|---|---|---|---|---|", *rows, ""])
    return write_text(out / "compare.md", text)
