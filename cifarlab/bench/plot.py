"""bench.png: time per pass (log) against batch size, one panel per device and data source."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..io import save_figure  # noqa: E402
from .goals import break_even, find  # noqa: E402

LINES = ("memory-copy", "dataloader-floor", "batched-torchvision", "exact-operator", "model-fast", "model-reference")


def bench_figure(results: dict, path) -> None:
    rows = results["rows"]
    protocol = ("model-reference", "dataloader-floor")  # drawn on every panel of their device
    panels = sorted({(r["device"], r["source"]) for r in rows if r["batch_size"] and r["contender"] not in protocol})
    if not panels:
        panels = [("cpu", "resident")]
    fig, axes = plt.subplots(1, len(panels), figsize=(8.5 * len(panels), 4.5), squeeze=False)
    for ax, (device, source) in zip(axes[0], panels):
        series = {}
        for r in rows:
            if r["device"] == device and r["batch_size"] and r["contender"] in LINES and (
                    r["source"] == source or r["contender"] in protocol):
                name = r["contender"] + (f" [{r['variant']}]" if r["contender"] == "model-fast" else "")
                series.setdefault(name, []).append((r["batch_size"], r["median"]))
        for name, points in sorted(series.items()):
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=3, label=name)
        for name, style in (("sequential", "--"), ("sequential-functional", ":")):
            seq = find(rows, name, "cpu")
            if seq:
                ax.axhline(seq["median"], color="black", ls=style, lw=1, label=f"{name} (CPU)")
        whole = find(rows, "memory-copy-whole", device, source=source)
        if whole:
            ax.axhline(whole["median"], color="gray", ls="-.", lw=1, label="memory-copy-whole")
        even = break_even(rows, device)
        if even:
            ax.axvline(even, color="red", ls=":", lw=1, label=f"break-even (reference protocol): {even}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel(f"seconds for {results['images']:,} images")
        ax.set_title(f"{device} — data {source}" + ("" if results["complete"] else " (INCOMPLETE)"))
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: no line hidden
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
