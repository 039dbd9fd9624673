"""`run_benchmark`: time every contender on one workload and write bench.json/md/png.

Order: the per-image loops (CPU), then per device and batch size the floors, batched
torchvision, the model's fastest path (each variant), the exact operator and the reference
protocol. Ctrl-C stops the measuring; what was measured is still written, marked incomplete.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import load
from ..devices import available_devices, resolve_device
from ..errors import CifarlabError
from ..evaluation.metrics import data_range
from ..io import read_json
from ..models.exact import exact_operator_net
from ..pipeline import Pipeline
from ..runs import RunFolder
from ..transform.artifact import read_checkpoint
from . import contenders as C
from .report import write_outputs
from .goals import goal_batch
from .timing import machine_facts, measure_rounds, peak_memory_mb
from .variants import build_variant, parse_variants
from .workload import load_workload, run_config

DEFAULT_BATCH_SIZES = (1, 16, 64, 128, 256, 1024)
ALL_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
QUALITY_TOLERANCE_DB = 0.5  # a variant is kept when it loses at most this much PSNR


def parse_batch_sizes(text) -> tuple[int, ...]:
    if isinstance(text, (list, tuple)):
        values = list(text)
    elif str(text).strip().lower() == "all":
        return ALL_BATCH_SIZES
    else:
        values = [v.strip() for v in str(text).split(",") if v.strip()]
    sizes = []
    for value in values:
        try:
            size = int(value)
        except (TypeError, ValueError):
            size = 0
        if size < 1 or str(value).strip() != str(size):
            raise CifarlabError(f"batch sizes must be positive integers (or 'all'), got {value!r}")
        sizes.append(size)
    if not sizes:
        raise CifarlabError("no batch sizes given: e.g. --batch-sizes 1,16,64,128,256,1024")
    return tuple(dict.fromkeys(sizes))


def parse_devices(text) -> list[torch.device]:
    names = available_devices() if text in (None, "", "all") else [d.strip() for d in str(text).split(",") if d.strip()]
    return list(dict.fromkeys(resolve_device(name) for name in names))


def psnr(squared_error: float, count: int, peak: float) -> float:
    mse = squared_error / max(count, 1)
    return float("inf") if mse == 0 else 10 * math.log10(peak ** 2 / mse)


@dataclass
class Entry:
    """One contender's pass, to be timed in rounds beside the others of its group."""
    contender: str
    run: C.Pass
    batch_size: int | None
    variant: str | None = None
    warmup: C.Pass | None = None
    extra: dict = field(default_factory=dict)


class Bench:
    """Holds the rows measured so far and the settings every measurement shares."""

    def __init__(self, workload, repeats: int, quiet: bool):
        self.workload, self.repeats, self.quiet = workload, repeats, quiet
        self.rows: list[dict] = []
        self.notes: list[str] = []
        self.groups = 0
        self.peak = data_range(workload.targets)

    def time(self, contender: str, device, run, batch_size=None, source="resident", variant=None,
             warmup=None, **extra) -> dict:
        return self.time_together(device, source, [Entry(contender, run, batch_size, variant, warmup, extra)])[0]

    def time_together(self, device, source: str, entries: list[Entry]) -> list[dict]:
        """Time `entries` in interleaved rounds; their rows share a `round_group`, so ratios
        between them are taken round by round."""
        timings = measure_rounds(dict(enumerate(e.run for e in entries)), self.repeats, device,
                                 {i: e.warmup for i, e in enumerate(entries) if e.warmup})
        self.groups += 1
        rows = []
        for i, e in enumerate(entries):
            timing = timings[i]
            row = {"contender": e.contender, "variant": e.variant, "device": device.type, "source": source,
                   "batch_size": e.batch_size, **timing.to_dict(), "round_group": self.groups,
                   "per_image_us": timing.median / len(self.workload) * 1e6, "peak_rss_mb": peak_memory_mb(),
                   **e.extra}
            rows.append(row)
            if not self.quiet:
                label = e.contender + (f"[{e.variant}]" if e.variant else "")
                where = f"{device.type}" + (f"/{source}" if source != "resident" else "")
                print(f"bench: {label:28s} {where:9s} batch {e.batch_size or '-':>5}  {timing.median:9.4f} s",
                      file=sys.stderr)
        self.rows += rows
        return rows

    def score(self, model, images, device, batch_size) -> float:
        return psnr(C.squared_error(model, images, self.workload.targets, batch_size, device),
                    self.workload.targets.numel(), self.peak)


def run_benchmark(run_dir, images: int = 10000, batch_sizes=DEFAULT_BATCH_SIZES, devices=None,
                  repeats: int = 5, variants=None, quiet: bool = False) -> dict:
    """Benchmark the trained model of `run_dir`; writes bench.json, bench.md, bench.png and
    regenerates report.md. Returns the results (also on Ctrl-C, then marked incomplete)."""
    run_dir = Path(run_dir)
    sizes = parse_batch_sizes(batch_sizes)
    devs = parse_devices(devices)
    names = parse_variants(variants)
    if repeats < 1:
        raise CifarlabError(f"--repeats must be a positive integer, got {repeats}")
    with RunFolder.open(run_dir, "benchmark"):  # not while the run trains, nor two benchmarks at once
        return _run_benchmark(run_dir, images, sizes, devs, repeats, names, quiet)


def _run_benchmark(run_dir, images, sizes, devs, repeats, names, quiet) -> dict:
    model, workload = open_run(run_dir, images)
    bench = Bench(workload, repeats, quiet)
    facts = machine_facts(devs)  # before measuring: the load average is the machine's, not ours
    started, complete = time.time(), True
    try:
        _measure_all(bench, model, workload, devs, sizes, names, _stated_psnr(run_dir))
    except KeyboardInterrupt:
        complete = False
        print("bench: interrupted; writing what was measured (marked incomplete)", file=sys.stderr)
    results = {"complete": complete, "run_dir": str(run_dir), "images": len(workload),
               "unique_images": workload.unique, "data": workload.data, "pipeline": workload.pipeline.spec,
               "workload_mb": workload.megabytes, "repeats": repeats, "batch_sizes": list(sizes),
               "devices": [d.type for d in devs], "machine": facts,
               "seconds": time.time() - started, "peak_rss_mb": peak_memory_mb(), "notes": bench.notes,
               "rows": bench.rows}
    write_outputs(run_dir, results)
    if not complete:
        raise KeyboardInterrupt
    return results


def open_run(run_dir: Path, images: int):
    """The run's model, exactly as `cifarlab.load` gives it to a user, and the workload."""
    if not Path(run_dir).is_dir():
        raise CifarlabError(f"run folder {str(run_dir)!r} does not exist")
    ckpt = read_checkpoint(Path(run_dir) / "model.pt")
    model = load(run_dir)
    pipeline = Pipeline.parse(ckpt.get("pipeline") or "")
    return model, load_workload(run_config(run_dir, ckpt), pipeline, model.in_shape, images)


def _stated_psnr(run_dir: Path) -> float | None:
    try:
        return float(read_json(run_dir / "metrics.json")["psnr"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _measure_all(bench: Bench, model, workload, devices, sizes, names, stated_psnr):
    cpu = torch.device("cpu")
    first = workload.inputs[:min(len(workload), 500)]
    bench.time("sequential", cpu, C.per_image(workload.inputs, workload.pipeline.compose()),
               warmup=C.per_image(first, workload.pipeline.compose()), note="torchvision v2 transform objects")
    bench.time("sequential-functional", cpu, C.per_image(workload.inputs, workload.pipeline),
               warmup=C.per_image(first, workload.pipeline), note="torchvision v2.functional calls")
    try:
        exact = exact_operator_net(workload.pipeline, model.in_shape).eval().requires_grad_(False)
    except CifarlabError as e:
        exact = None
        bench.notes.append(f"exact operator not timed: {e}")
    for device in devices:
        _measure_device(bench, model, exact, workload, device, sizes, names, stated_psnr)


def _measure_device(bench: Bench, model, exact, workload, device, sizes, names, stated_psnr, sources=None):
    built = [v for v in (build_variant(n, model, workload, device) for n in names) if v is not None]
    scores = {v.name: bench.score(v.model, v.images, device, max(sizes)) for v in built}
    floor_psnr = min(scores.get("plain", math.inf), stated_psnr if stated_psnr is not None else math.inf)
    exact_net = exact.to(device) if exact is not None else None
    exact_psnr = bench.score(exact_net, workload.inputs, device, max(sizes)) if exact_net is not None else None
    tv_psnr = bench.score(workload.pipeline, workload.inputs, device, max(sizes))
    # On an accelerator the data either already lives there or starts on the host (the transfer
    # timed in); on the CPU both are the same thing. `sources` is overridable for tests.
    sources = sources or (("resident",) if device.type == "cpu" else ("resident", "host"))
    for source in sources:
        on = (lambda t: t.to(device)) if source == "resident" else (lambda t: t)
        inputs = on(workload.inputs)
        variant_inputs = {v.name: inputs if v.images is workload.inputs else on(v.images) for v in built}
        copy_fn = (lambda b: b.clone()) if source == "resident" else (lambda b: b)
        for size in sizes:
            group = [Entry("memory-copy", C.sliced(inputs, size, device, copy_fn), size),
                     Entry("batched-torchvision", C.sliced(inputs, size, device, workload.pipeline), size,
                           extra={"psnr": tv_psnr})]
            if size == goal_batch(sizes):  # the whole-tensor floor beside the goal's batch size
                group.insert(0, Entry("memory-copy-whole", lambda whole=inputs: whole.to(device, copy=True), None))
            group += [Entry("model-fast", C.sliced(variant_inputs[v.name], size, device, v.model), size, v.name,
                            extra={"psnr": scores[v.name], "kept": v.name == "plain"
                                   or scores[v.name] >= floor_psnr - QUALITY_TOLERANCE_DB}) for v in built]
            if exact_net is not None:
                group.append(Entry("exact-operator", C.sliced(inputs, size, device, exact_net), size,
                                   extra={"psnr": exact_psnr}))
            bench.time_together(device, source, group)
        del inputs, variant_inputs
    reference_model = model.to(device)
    for size in sizes:
        bench.time_together(device, "host", [
            Entry("dataloader-floor", C.reference_loader(workload.inputs, size, device), size),
            Entry("model-reference", C.reference_loader(workload.inputs, size, device, reference_model), size,
                  "plain", extra={"psnr": scores.get("plain")})])
