"""Which steps a network learns well: one run per registered step, and per chain of hard steps.

    cifarlab transform survey --data ../shared/data/cifar10-train-subset --time-budget 300

Each step of the registry goes first, with the typical arguments of `STEP_ARGUMENTS`, in front of
the default pipeline (`resize:28x28,grayscale,hflip,vflip`), and the default model trains on it
for one budget (the clock is the limit: `training.budget`), starting from the probed operator where
sepnet holds one (``init="auto"``: a linear pipeline's whole operator, else its spatial steps').
`CHAINS` are two- and three-step chains of the hard steps. The survey writes, into one folder:

- `runs/<n>-<slug>/`: every run folder (model, metrics, samples, report);
- `survey.json`: the rows, rewritten atomically after each run;
- `survey.md`: both tables (step, arguments, linear or not, parameters, PSNR, SSIM,
  cos ≥ 0.95, time, for linear pipelines the exact operator's PSNR, and the trained network's
  forward cost at batch 1024, timed after all runs, beside a copy of the same batch);
- `survey.png`: one row of held-out samples (input, ground truth, model) per pipeline.

An interrupted survey keeps its finished rows: the same command again skips them, resumes the
run that was cut off, and goes on with the rest.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CifarlabError
from ..evaluation import fidelity, predict
from ..evaluation.format import db
from ..io import read_json, torch_save, write_json, write_text
from ..pipeline import DEFAULT_PIPELINE, Pipeline
from ..pipeline.steps import STEPS
from ..runs import RunFolder
from ..training.budget import check_time_budget
from .config import TransformConfig
from .loop import train

# step -> the arguments it is surveyed with (typical values a user would pick)
STEP_ARGUMENTS = {
    "resize": "24x24", "center_crop": "24x24", "pad": "4:reflect", "grayscale": "3", "hflip": "", "vflip": "",
    "rotate": "30", "gaussian_blur": "5:1.0", "adjust_brightness": "1.3", "adjust_contrast": "1.4",
    "adjust_saturation": "1.6", "adjust_sharpness": "2.0", "adjust_hue": "0.1", "adjust_gamma": "0.7",
    "invert": "", "autocontrast": "", "solarize": "0.5", "normalize": "0.5:0.25",
}
# two- and three-step chains of the steps that are hard to learn
CHAINS = (
    "autocontrast,adjust_saturation:1.6",
    "adjust_hue:0.1,adjust_sharpness:2.0",
    "rotate:30:bilinear,adjust_gamma:0.7",
    "gaussian_blur:5:1.0,adjust_contrast:1.4",
    "solarize:0.5,gaussian_blur:5:1.0",
    "adjust_sharpness:2.0,autocontrast",
    "autocontrast,adjust_hue:0.1,gaussian_blur:5:1.0",
    "rotate:30:bilinear,adjust_sharpness:2.0,adjust_gamma:0.7",
)


@dataclass(frozen=True)
class SurveyItem:
    table: str      # "steps" or "chains"
    name: str       # the step's name, or the chain
    head: str       # the steps in front of the default pipeline

    @property
    def pipeline(self) -> str:
        return f"{self.head},{DEFAULT_PIPELINE}"

    @property
    def arguments(self) -> str:
        return self.head.partition(":")[2] if self.table == "steps" else ""


def survey_items(steps: str = "all", chains: bool = True) -> list[SurveyItem]:
    names = sorted(STEPS) if steps == "all" else [s.strip() for s in steps.split(",") if s.strip()]
    unknown = [n for n in names if n not in STEPS]
    if unknown or not names:
        raise CifarlabError(f"unknown step(s) {', '.join(unknown) or '(none)'} for --steps; valid: "
                            f"all or some of {', '.join(sorted(STEPS))}")
    items = [SurveyItem("steps", n, f"{n}:{STEP_ARGUMENTS[n]}" if STEP_ARGUMENTS.get(n) else n) for n in names]
    items += [SurveyItem("chains", c, c) for c in CHAINS] if chains else []
    for item in items:
        Pipeline.parse(item.pipeline)  # every pipeline is checked before anything trains
    return items


def exact_psnr(pipeline: Pipeline, inputs: torch.Tensor, targets: torch.Tensor) -> float | None:
    """PSNR of the pipeline's probed affine operator on the held-out images, or None when the
    pipeline is not linear."""
    from ..models.exact import probe_operator
    if not pipeline.is_linear(tuple(inputs.shape[1:])):
        return None
    a, b = probe_operator(pipeline, tuple(inputs.shape[1:]))
    out = (inputs.double().flatten(1) @ a.t() + b.flatten()).view_as(targets)
    return fidelity(out.float(), targets)["psnr"]


def _row(item: SurveyItem, run_dir: Path, x_val: torch.Tensor) -> dict:
    """The table row of a finished run, scored again on the survey's held-out images `x_val`
    (loaded once for the whole survey; each pipeline's ground truth is cheap on them)."""
    from .. import load
    from ..pipeline import ground_truth
    metrics = read_json(run_dir / "metrics.json")
    pipeline = Pipeline.parse(item.pipeline)
    y_val = ground_truth(x_val, pipeline, cache=False)
    from .artifact import read_checkpoint
    samples = {"input": x_val[:3], "truth": y_val[:3], "model": predict(load(run_dir), x_val[:3])}
    torch_save(samples, run_dir / "survey-samples.pt")
    fronts = read_checkpoint(run_dir / "model.pt")["model_kwargs"].get("fronts", "")
    return {"table": item.table, "name": item.name, "arguments": item.arguments, "pipeline": item.pipeline,
            "linear": bool(metrics["pipeline_is_linear"]), "parameters": metrics["parameters"],
            "psnr": float(metrics["psnr"]), "ssim": metrics["ssim"], "cosine_accuracy": metrics["cosine_accuracy"],
            "seconds": metrics["train_seconds"], "epochs": metrics["epochs"],
            "exact_psnr": exact_psnr(pipeline, x_val, y_val), "fronts": fronts, "run": run_dir.name}


COST_BATCH = 1024   # the batch the forward cost is timed at (the bench's large batch)


def forward_cost(run_dir: Path, repeats: int = 9) -> dict:
    """What the trained network costs to run: its forward pass over a batch of COST_BATCH float
    images on the CPU, timed in rounds paired with a copy of the same batch (`bench.timing`), so
    the ratio carries between machines where milliseconds do not."""
    import statistics

    from .. import load
    from ..bench.timing import measure_rounds
    net = load(run_dir)
    x = torch.rand(COST_BATCH, *net.in_shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        timed = measure_rounds({"model": lambda: net(x), "copy": lambda: x.clone()}, repeats, torch.device("cpu"))
    ratio = statistics.median(m / c for m, c in zip(timed["model"].samples, timed["copy"].samples))
    weights = sum(v.numel() for v in net.net.state_dict().values())   # buffers too: the fronts' tables
    return {"forward_ms": timed["model"].median * 1e3, "forward_vs_copy": ratio, "weights": weights}


def run_survey(data: str, out, time_budget: float, steps: str = "all", chains: bool = True, seed: int = 0,
               device: str = "auto", data_root: str | None = None, quiet: bool = False,
               model_args: dict | None = None) -> Path:
    """Train one run per survey item (see the module docstring); returns survey.md. `model_args`:
    options of the default model for every run (`--model-args`)."""
    check_time_budget(time_budget)
    items = survey_items(steps, chains)
    out = Path(out)
    state_path = out / "survey.json"
    settings = {"data": data, "time_budget": time_budget, "seed": seed, "device": device}
    if model_args:   # only when given: surveys made before the option keep resuming
        settings["model_args"] = dict(model_args)
    with (RunFolder.open(out, "resume the survey in") if state_path.exists() else RunFolder.create(out)):
        state = read_json(state_path) if state_path.exists() else {"settings": settings, "rows": []}
        if state.get("settings") != settings:
            raise CifarlabError(f"{str(out)!r} holds a survey with other settings ({state.get('settings')}); "
                                f"choose another --out")
        done = {(r["table"], r["name"]) for r in state["rows"]}
        x_val = heldout_inputs(data, data_root, seed)
        for number, item in enumerate(items):
            if (item.table, item.name) in done:
                continue
            run_dir = out / "runs" / f"{number:02d}-{_slug(item.name)}"
            if not quiet:
                print(f"survey {number + 1}/{len(items)}: {item.pipeline}", file=sys.stderr, flush=True)
            finished = (run_dir / "metrics.json").exists() and \
                read_json(run_dir / "metrics.json").get("stopped_by") != "interrupted"
            if not finished:
                if (run_dir / "last.pt").exists():
                    train(None, resume=str(run_dir), quiet=True)
                else:
                    if run_dir.exists():  # made but saved nothing before it was cut off
                        RunFolder.open(run_dir).abandon()
                    config = TransformConfig(data=data, data_root=data_root, pipeline=item.pipeline, init="auto",
                                             time_budget=time_budget, seed=seed, device=device, logger="none",
                                             model_args=dict(model_args or {}))
                    try:
                        train(config.validate(), out=str(run_dir), quiet=True)
                    except CifarlabError as e:
                        state["rows"].append({"table": item.table, "name": item.name, "arguments": item.arguments,
                                              "pipeline": item.pipeline, "error": str(e), "run": run_dir.name})
                        write_json(state_path, state)
                        continue
            state["rows"].append(_row(item, run_dir, x_val))
            write_json(state_path, state)
        for row in state["rows"]:   # timed after training, so no run shares the CPU with a timing
            if "error" not in row and "weights" not in row:
                row.update(forward_cost(out / "runs" / row["run"]))
                write_json(state_path, state)
        write_outputs(out, state)
    return out / "survey.md"


def heldout_inputs(data: str, data_root, seed: int) -> torch.Tensor:
    """The held-out images every survey run is scored on: the runs' own validation split."""
    from ..data import load_images, validation_split
    pool = load_images(data, "train", data_root)
    _, val = validation_split(len(pool), TransformConfig.val_fraction, seed)
    return pool.images[val].float().div(255)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)[:60].strip("-")


def write_outputs(out: Path, state: dict) -> None:
    settings = state["settings"]
    header = ("| {first} | arguments | linear | exact fronts | weights | PSNR | SSIM | cos ≥ 0.95 | time / epochs "
              f"| exact operator | forward, batch {COST_BATCH} (CPU): ms, × a copy |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|")
    lines = ["# Learnability survey", "",
             f"Each step goes first, in front of the default pipeline `{DEFAULT_PIPELINE}`; the default model "
             f"trains {settings['time_budget']:g} s on `{settings['data']}` (seed {settings['seed']}); metrics on "
             f"the held-out images. Exact operator: the PSNR of the pipeline's probed affine operator, where the "
             f"pipeline is linear. Forward: the trained network on {COST_BATCH} float images on this machine's "
             f"CPU, and that time over a copy of the same batch timed in the same rounds. Weights: every number "
             f"the network holds, trained or probed (the exact fronts' tables are buffers, not parameters, but for the "
             f"colour table, which is probed, then trained). Exact "
             f"fronts: what the network does with probed tables before what it learns, in order (`exact_front`)."
             + (f" Model options: `{_options(settings['model_args'])}`." if settings.get("model_args") else ""), ""]
    for table, first in (("steps", "step"), ("chains", "chain")):
        rows = [r for r in state["rows"] if r["table"] == table]
        rows.sort(key=lambda r: r.get("run", ""))   # the survey's order, also for rows redone later
        if not rows:
            continue
        lines += [f"## {'One step' if table == 'steps' else 'Chains of hard steps'}", "",
                  header.format(first=first)]
        for r in rows:
            if "error" in r:
                lines.append(f"| `{r['name']}` | {r['arguments'] or '—'} | — | — | — | — | — | — | — | {r['error']} | — |")
                continue
            exact = db(r["exact_psnr"]) if r["exact_psnr"] is not None else "—"
            lines.append(f"| `{r['name']}` | {r['arguments'] or '—'} | {'yes' if r['linear'] else 'no'} | "
                         f"{r.get('fronts') or '—'} | {r.get('weights', r['parameters']):,} | {db(r['psnr'])} | {r['ssim']:.4f} | {r['cosine_accuracy']:.1%} | "
                         f"{r['seconds']:.0f} s / {r['epochs']} | {exact} | "
                         + (f"{r['forward_ms']:.2f} ms, {r['forward_vs_copy']:.1f}× |" if "forward_ms" in r else "— |"))
        lines.append("")
    lines += ["![samples](survey.png)", ""]
    write_text(out / "survey.md", "\n".join(lines))
    samples_grid(out, [r for r in state["rows"] if "error" not in r])


def _options(args: dict) -> str:
    return ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in args.items())


def samples_grid(out: Path, rows: list[dict]) -> None:
    """One row per pipeline: three held-out images as input / ground truth / model."""
    from ..io import save_figure
    from ..report.plots import _show, plt
    if not rows:
        return
    fig, axes = plt.subplots(len(rows), 9, figsize=(9 * 0.9, len(rows) * 0.95 + 0.3), squeeze=False)
    for i, r in enumerate(rows):
        samples = torch.load(out / "runs" / r["run"] / "survey-samples.pt", weights_only=True)
        for j in range(3):
            for k, kind in enumerate(("input", "truth", "model")):
                if j < len(samples[kind]):
                    _show(axes[i][3 * j + k], samples[kind][j], kind if i == 0 else None)
        axes[i][0].set_ylabel(r["name"][:18], fontsize=6, rotation=0, ha="right", va="center")
    fig.tight_layout()
    save_figure(fig, out / "survey.png")
    plt.close(fig)
