"""bench.json, bench.md and bench.png, and the run's report.md regenerated to include them."""
from __future__ import annotations

import math
from pathlib import Path

from ..errors import CifarlabError
from ..io import read_json, write_json, write_text
from .goals import break_even, evaluate_goals, fastest_model, find
from .plot import bench_figure
from .timing import paired_ratio

ORDER = ("memory-copy-whole", "memory-copy", "dataloader-floor", "batched-torchvision", "exact-operator",
         "model-fast", "model-reference")


def write_outputs(run_dir: Path, results: dict) -> None:
    results["goals"] = evaluate_goals(results["rows"], results["batch_sizes"])
    write_json(run_dir / "bench.json", results)
    write_text(run_dir / "bench.md", bench_markdown(results))
    if results["rows"]:
        bench_figure(results, run_dir / "bench.png")
    regenerate_report(run_dir)


def regenerate_report(run_dir: Path) -> None:
    """report.md appends bench.md when it exists: rewrite it from the run's own files."""
    from ..transform.config import TransformConfig
    from ..transform.finish import write_report

    if not (run_dir / "metrics.json").is_file() or not (run_dir / "config.json").is_file():
        return  # a run folder without a report has none to update
    metrics, config = read_json(run_dir / "metrics.json"), read_json(run_dir / "config.json")
    if isinstance(metrics.get("psnr"), str):
        metrics["psnr"] = float(metrics["psnr"])  # JSON stores inf as the string 'inf'
    try:
        write_report(run_dir, metrics, TransformConfig.from_dict(config, source=str(run_dir / "config.json")))
    except (KeyError, TypeError, ValueError) as e:
        raise CifarlabError(f"{str(run_dir / 'metrics.json')!r} is damaged ({type(e).__name__}: {e}); "
                            f"bench.md was written, report.md was not updated") from None


def _s(value) -> str:
    return "—" if value is None else f"{value:.4g}"


def _db(value) -> str:
    if value is None:
        return "—"
    value = float(value)  # bench.json stores an infinite PSNR as the string 'inf'
    return "exact (∞)" if math.isinf(value) else f"{value:.1f}"


def _load(value) -> str:
    return "not recorded" if value is None else f"{value:.2f}"


def _x(value) -> str:
    return "—" if value is None else f"{value:.2f}×"


def bench_markdown(results: dict) -> str:
    rows, facts = results["rows"], results["machine"]
    seq = find(rows, "sequential", "cpu")
    fun = find(rows, "sequential-functional", "cpu")
    lines = []
    if not results["complete"]:
        lines += ["**INCOMPLETE: the benchmark was interrupted; the tables hold what was measured.**", ""]
    lines += [
        f"Workload: {results['images']:,} images of {results['data']} (tiled from {results['unique_images']:,}), "
        f"float32 (N, 3, 32, 32) in [0, 1], {results['workload_mb']:.0f} MiB; pipeline `{results['pipeline']}`. "
        f"Each time is the median of {results['repeats']} passes over the whole workload after one warm-up pass "
        f"[min–max]; GPU times are synchronised. "
        f"The contenders of one device, data source and batch size run in interleaved rounds (the order rotated "
        f"each round), and every ratio is the median of the per-round ratios, so a slow spell of a shared "
        f"machine hits the model and its floor alike.",
        f"Machine: {facts['cpu']}, {facts['cpu_cores']} cores, {facts['torch_threads']} torch threads, "
        f"torch {facts['torch']}, torchvision {facts['torchvision']}"
        + "".join(f", {k}={v}" for k, v in (facts.get("thread_env") or {}).items())
        + (f", GPU {facts['gpu']}" if facts.get("gpu") else "") + f"; 1-minute load average at the start {_load(facts.get('load_average_1min'))}. "
        f"Peak resident memory {results['peak_rss_mb']:.0f} MiB (Python, torch and every copy of the workload).",
        "",
    ]
    lines += [f"Note: {note}" for note in results.get("notes", [])]
    if seq:
        lines += [f"Sequential (torchvision v2 transform objects, one image at a time, CPU): **{_s(seq['median'])} s** "
                  f"[{_s(seq['low'])}–{_s(seq['high'])}]; the same loop with `v2.functional` calls: "
                  f"{_s(fun['median']) if fun else '—'} s.", ""]
    lines += _reference_table(rows, results, seq) + _contender_table(rows, results) + _goal_table(results["goals"])
    return "\n".join(lines) + "\n"


def _reference_table(rows, results, seq) -> list[str]:
    if not seq:
        return []
    lines = ["### Against the sequential baseline, as the reference reports tabulate it", "",
             "| device | batch size | sequential (s) | model, reference protocol (s) | speedup | status "
             "| model, fastest path (s) | speedup | PSNR (dB) |", "|---|---|---|---|---|---|---|---|---|"]
    for device in results["devices"]:
        for size in results["batch_sizes"]:
            ref = find(rows, "model-reference", device, size, "host")
            fast = fastest_model(rows, device, size)
            if not ref and not fast:
                continue
            speed = seq["median"] / ref["median"] if ref else None
            status = "—" if speed is None else ("FASTER" if speed > 1 else "Slower")
            fast_speed = seq["median"] / fast["median"] if fast else None
            name = f" [{fast['variant']}]" if fast else ""
            lines.append(f"| {device.upper()} | {size} | {_s(seq['median'])} | {_s(ref and ref['median'])} | "
                         f"{_x(speed)} | {status} | {_s(fast and fast['median'])}{name} | {_x(fast_speed)} | "
                         f"{_db(fast and fast.get('psnr'))} |")
        ref_even, fast_even = break_even(rows, device), break_even(rows, device, "model-fast")
        lines.append(f"\nBreak-even batch size on {device}: reference protocol {ref_even or 'none'}, "
                     f"fastest path {fast_even or 'none'}.\n")
    return lines


def _contender_table(rows, results) -> list[str]:
    lines = ["### Every contender", "",
             "`memory-copy` clones each batch in the same slicing loop as the model; `memory-copy-whole` clones the "
             "whole tensor at once (fresh memory); `dataloader-floor` is the reference protocol with no model; "
             "`host` rows start from data on the host and include the transfer.", "",
             "| device | data | batch | contender | median (s) | min–max (s) | µs/image | × copy (same batch) "
             "| batched-tv / this | PSNR (dB) |", "|---|---|---|---|---|---|---|---|---|---|"]
    rank = {name: i for i, name in enumerate(ORDER)}
    ordered = sorted((r for r in rows if r["contender"] in rank),
                     key=lambda r: (r["device"], r["source"], r["batch_size"] or 0, rank[r["contender"]]))
    for r in ordered:
        copy = find(rows, "memory-copy", r["device"], r["batch_size"], r["source"])
        tv = find(rows, "batched-torchvision", r["device"], r["batch_size"], r["source"])
        name = r["contender"] + (f" [{r['variant']}]" if r.get("variant") and r["contender"] == "model-fast" else "")
        if r.get("kept") is False:
            name += " (dropped: loses quality)"
        lines.append(f"| {r['device']} | {r['source']} | {r['batch_size'] or 'all'} | {name} | {_s(r['median'])} | "
                     f"{_s(r['low'])}–{_s(r['high'])} | {r['per_image_us']:.2f} | "
                     f"{_x(paired_ratio(r, copy) if r['batch_size'] else None)} | "
                     f"{_x(paired_ratio(tv, r))} | {_db(r.get('psnr'))} |")
    return lines + [""]


def _goal_table(goals) -> list[str]:
    if not goals:
        return []
    lines = ["### Goals (ratios against floors timed in this run)", "", "| goal | measured | target | met |",
             "|---|---|---|---|"]
    for g in goals:
        value = "—" if g["value"] is None else f"{g['value']:.2f}"
        note = f" ({g['note']})" if g.get("note") else ""
        lines.append(f"| {g['goal']}{note} | {value} | {g['target']} | {'yes' if g['met'] else '**no**'} |")
    return lines + [""]
