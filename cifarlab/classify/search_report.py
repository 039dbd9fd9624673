"""A finished (or interrupted) search as files: trials.csv, best.json, heatmap.png, report.md."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from ..io import save_figure, write_json, write_text  # noqa: E402
from .search import STEPS_ATTR, budget_words  # noqa: E402


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def trial_rows(study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        folds = t.user_attrs.get("fold_accuracies", [])
        state = "DUPLICATE" if "duplicate_of" in t.user_attrs else t.state.name
        rows.append({"number": t.number, "state": state, **t.params,
                     "mean": t.value if t.state == TrialState.COMPLETE else None,
                     "std": t.user_attrs.get("std"), "folds": folds, "seconds": t.user_attrs.get("seconds"),
                     "steps": dict(sorted(t.intermediate_values.items()))})
    return rows


def heatmap(rows: list[dict], space: dict, path) -> bool:
    """Mean accuracy over the first two searched grid parameters with more than one value."""
    axes_names = [n for n, v in space.items() if isinstance(v, list) and len(v) > 1][:2]
    if not axes_names:
        return False
    y_name = axes_names[0]
    x_name = axes_names[1] if len(axes_names) > 1 else None
    ys = sorted(space[y_name], key=lambda v: (isinstance(v, str), v))
    xs = sorted(space[x_name], key=lambda v: (isinstance(v, str), v)) if x_name else [None]
    best: dict = {}
    for row in rows:
        if row["mean"] is None:
            continue
        key = (row.get(y_name), row.get(x_name) if x_name else None)
        best[key] = max(best.get(key, -1.0), row["mean"])
    grid = [[best.get((y, x), float("nan")) for x in xs] for y in ys]
    fig, ax = plt.subplots(figsize=(1.1 * len(xs) + 2.5, 0.6 * len(ys) + 1.8))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            value = grid[i][j]
            ax.text(j, i, "—" if value != value else f"{value:.1%}", ha="center", va="center", fontsize=8,
                    color="white")
    ax.set_yticks(range(len(ys)), [_fmt(y) for y in ys])
    ax.set_ylabel(y_name)
    ax.set_xticks(range(len(xs)), [_fmt(x) for x in xs] if x_name else [""])
    ax.set_xlabel(x_name or "")
    ax.set_title("mean k-fold accuracy", fontsize=9)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return True


def budget_text(spec, steps: int | None = None) -> str:
    """'30 s = 76 steps of training per trial and fold; successive halving (...)'."""
    pruner = {"halving": "; successive halving (fold 1's run looked at a third of the way, through a copy that "
                         "finished its schedule, and at its end, then the other folds)",
              "hyperband": "; Hyperband over fold 1's run at a third (a copy that finished its schedule) and at "
                           "its end, then the other folds",
              "none": "; no pruning"}[spec.pruner_name()]
    given = " (--steps)" if spec.steps else ""
    return f"{budget_words(spec, steps)} of training per trial and fold{given}{pruner}"


def _steps(steps: dict) -> str:
    """Intermediate values by step (ninths of one fold's budget): '3: 40.0%, 9: 60.2%'."""
    return ", ".join(f"{step}: {value:.1%}" for step, value in steps.items())


def edge_note(best: dict, space: dict) -> str:
    """A best value at the end of a searched list says the optimum may lie beyond the grid."""
    notes = []
    for name, values in space.items():
        numbers = sorted(v for v in values if isinstance(v, (int, float))) if isinstance(values, list) else []
        if len(numbers) > 2 and best[name] in (numbers[0], numbers[-1]):
            notes.append(f"{name}={_fmt(best[name])} is the {'smallest' if best[name] == numbers[0] else 'largest'} "
                         f"value searched")
    return f" On the grid's edge: {'; '.join(notes)}; the optimum may lie beyond it." if notes else ""


def write_search_report(study, space: dict, spec, out: Path, seconds: float) -> Path:
    rows = trial_rows(study)
    names = list(space)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["number", "state", *names, "mean_accuracy", "std", "fold_accuracies", "seconds",
                     "intermediate"])
    for r in rows:
        writer.writerow([r["number"], r["state"], *[r.get(n) for n in names], r["mean"], r["std"],
                         " ".join(f"{a:.4f}" for a in r["folds"]), r["seconds"],
                         " ".join(f"{k}:{v:.4f}" for k, v in r["steps"].items())])
    write_text(out / "trials.csv", buffer.getvalue())

    complete = sorted((r for r in rows if r["mean"] is not None), key=lambda r: -r["mean"])
    has_heatmap = heatmap(rows, space, out / "heatmap.png")
    count = {state: sum(r["state"] == state for r in rows)
             for state in ("COMPLETE", "PRUNED", "DUPLICATE", "FAIL", "RUNNING", "WAITING")}
    lines = [f"# cifarlab classify search: recipe `{spec.recipe}`, {spec.folds}-fold cross-validation", "",
             f"Data: `{spec.data}`; {budget_text(spec, study.user_attrs.get(STEPS_ATTR))}; study `{study.study_name}`; "
             + ", ".join(f"{n} {state.lower()}" for state, n in count.items() if n)
             + f" trial(s); this invocation {seconds:.0f} s with {spec.workers} worker(s).", ""]
    if complete:
        best = complete[0]
        settings = ", ".join(f"{n}={_fmt(best[n])}" for n in names)
        flags = " ".join(f"--{n.replace('_', '-')} {_fmt(best[n])!s}" for n in names)
        lines += [f"**Best:** {settings}: {best['mean']:.2%} ± {best['std']:.2%} (trial {best['number']})."
                  + edge_note(best, space), "",
                  f"Train it: `cifarlab classify train --recipe {spec.recipe} --data {spec.data} {flags}`", ""]
        write_json(out / "best.json", {"params": {n: best[n] for n in names}, "mean_accuracy": best["mean"],
                                       "std": best["std"], "trial": best["number"], "recipe": spec.recipe})
    lines += ["| trial | " + " | ".join(names) + " | state | accuracy (mean ± std) | folds | seconds | "
              "intermediate (step: accuracy) |", "|---|" + "---|" * len(names) + "---|---|---|---|---|"]
    pruned = sorted((r for r in rows if r["state"] == "PRUNED"),
                    key=lambda r: (-max(r["steps"], default=0), r["number"]))  # furthest first
    for r in complete + pruned:
        accuracy = f"{r['mean']:.2%} ± {r['std']:.2%}" if r["mean"] is not None else "—"
        lines.append(f"| {r['number']} | " + " | ".join(_fmt(r[n]) for n in names)
                     + f" | {r['state'].lower()} | {accuracy} | " + " ".join(f"{a:.1%}" for a in r["folds"])
                     + f" | {r['seconds'] or 0:.0f} | {_steps(r['steps'])} |")
    if has_heatmap:
        lines += ["", "![heatmap](heatmap.png)"]
    lines.append("")
    return write_text(out / "report.md", "\n".join(lines))
