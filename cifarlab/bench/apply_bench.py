"""`cifarlab transform bench-apply`: `transform apply` against the loop a user would write, on
image files, in one run, as ratios.

    cifarlab transform bench-apply RUN --data FOLDER --images 10000 --memory-images 50000 --scratch /tmp/x

The data folder's images are tiled (hard links, copies where links fail) into SCRATCH to
`images` files, and to `memory_images` for the memory check. Timed, each on the same files:

- `loop`: per image, PIL open, the run's pipeline as torchvision v2 transform objects on the
  one image (`ToImage`, `ToDtype(float32, scale=True)`, the steps), `to_pil_image`, PIL save;
- `floor`: the same number of output files written atomically by one process, with nothing
  decoded or encoded: the file system's own cost, which bounds every contender;
- `apply --workers 1` and `--workers 2` (the local engine);
- `apply --engine ray` on a local Ray instance with `ray_cpus` CPUs (when Ray is installed),
  Ray's own start-up timed apart.

Each engine writes into a fresh folder (every earlier output is deleted before the first
pass, and dirty pages are flushed before each: on a disk mounted with `discard`, deleting
10,000 files slows whatever runs next); its wall time covers the whole call (listing the
files, loading the model, starting worker processes), less the engine's own start-up and
shutdown (Ray: starting the instance and warming its workers; `ray.shutdown`), which are
reported on their own, with Ray's ratio to the local engine both without and with them. Every engine's PNGs must be byte-identical to `--workers 2`'s, and
within 1/255 of the loop's (which truncates where apply rounds) when the network is exact;
a trained network adds its own error, which the check states. Peak memory comes from separate
passes of `--workers 2` (and Ray) at `images` and `memory_images` files, not from the timed
ones: it is the largest sum of proportional set sizes (PSS: shared pages split among their
sharers) of this process and all its descendants (workers, Ray's processes), sampled every
20 ms from /proc, which costs CPU. The scratch folder's file system is recorded: creating a
small file costs ~0.3-0.6 ms of kernel time on this machine's ext4, ~0.02 ms on tmpfs.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import CifarlabError
from ..io import write_json, write_text


# ---- the workload

def tile_folder(data: Path, out: Path, count: int) -> list[Path]:
    """`count` image files under `out` (copies 0/, 1/, ... of data's tree), made once and reused."""
    from ..data.sources import _image_files
    sources = _image_files(data)
    if not sources:
        raise CifarlabError(f"data folder {str(data)!r} holds no images")
    done = out / ".complete"
    if done.exists() and int(done.read_text()) == count:
        return _image_files(out)
    if out.exists():
        shutil.rmtree(out)
    files = []
    for i in range(count):
        source = sources[i % len(sources)]
        target = out / str(i // len(sources)) / source.relative_to(data)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        files.append(target)
    done.write_text(str(count))
    return sorted(files)


def _refuse_scratch_in_repo(scratch: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    if (repo / ".git").exists() and (scratch == repo or repo in scratch.parents):
        raise CifarlabError(f"--scratch {str(scratch)!r} lies inside the repository {str(repo)!r}; "
                            f"choose a folder outside it, e.g. under /tmp")


# ---- memory: this process and every descendant

def _pss_kb(pid: int) -> int:
    """Proportional set size: resident memory with each shared page split among its sharers, so
    forked workers sharing the parent's pages are not counted twice (RSS would)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return found


def tree_memory_mb(pid: int | None = None) -> float:
    pid, total, seen = pid or os.getpid(), 0, set()
    todo = [pid]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += _pss_kb(p)
        todo += _children(p)
    return total / 1024


class PeakMemory:
    """The peak of `tree_memory_mb` while the block runs, sampled in a thread."""

    def __enter__(self):
        self.peak, self._stop = tree_memory_mb(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, tree_memory_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_memory_mb())


# ---- the contenders

def user_loop(run_dir: Path, files: list[Path], root: Path, out: Path) -> None:
    """What a user would write: one image at a time through PIL and torchvision v2."""
    from PIL import Image
    from torchvision.transforms import v2

    from ..pipeline import Pipeline
    from ..transform.artifact import read_checkpoint
    from .. import model_file
    pipeline = Pipeline.parse(read_checkpoint(model_file(run_dir)).get("pipeline") or "")
    transform = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), *pipeline.compose().transforms])
    for file in files:
        target = (out / file.relative_to(root)).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(file) as image:
            result = transform(image.convert("RGB"))
        v2.functional.to_pil_image(result.clamp(0, 1)).save(target)


def write_floor(files: list[Path], root: Path, out: Path, size: int = 900) -> None:
    """The file system's floor: the loop's output files, `size` bytes each, written atomically as
    apply writes them, with nothing decoded or encoded. Neither the loop nor apply can beat it."""
    from ..io import write_files
    blob = bytes(size)
    write_files(((out / file.relative_to(root)).with_suffix(".png"), blob) for file in files)


def _timed(name, fn, rows, count, memory: bool = False, **extra):
    """One pass. Timed passes run alone: the memory sampler reads /proc for every process every
    20 ms, which cost the engines with more processes the most; its passes (`memory`) are
    separate. The page cache's dirty pages are flushed first, so no pass pays for the last
    one's writes."""
    os.sync()
    with PeakMemory() if memory else contextlib.nullcontext() as sampler:
        started = time.perf_counter()
        startup, shutdown = fn() or (0.0, 0.0)
        whole = time.perf_counter() - started
        seconds = whole - startup - shutdown
    peak = sampler.peak if memory else None
    row = {"engine": name + (" (memory pass)" if memory else ""), "images": count, "seconds": seconds,
           "images_per_second": count / seconds, "startup_seconds": startup or None,
           "shutdown_seconds": shutdown or None, "whole_call_images_per_second": count / whole,
           "peak_pss_mb": peak, "memory_pass": memory, **extra}
    rows.append(row)
    print(f"bench-apply: {row['engine']:36s} {count:6d} images  {seconds:7.2f} s  "
          f"{row['images_per_second']:7.0f} images/s" + (f"  (start-up {startup:.1f} s)" if startup else "")
          + (f" (shutdown {shutdown:.1f} s)" if shutdown else "")
          + (f"  peak PSS {peak:7.0f} MB" if memory else ""), file=sys.stderr)
    return row


def _engine_pass(run_dir, src, dst, engine):
    from ..transform.apply import apply_folder

    def run():
        result = apply_folder(run_dir, src, dst, engine=engine, quiet=True)
        if result.written != result.images:
            raise CifarlabError(f"{engine.name} wrote {result.written} of {result.images} images")
        return result.startup_seconds, result.shutdown_seconds
    return run


def _pngs(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in root.rglob("*.png")}


def compare_outputs(reference: Path, other: Path, tolerance: int = 0) -> dict:
    """Byte-identical files (tolerance 0), or the largest pixel difference (in 1/255)."""
    from PIL import Image
    a, b = _pngs(reference), _pngs(other)
    if sorted(a) != sorted(b):
        return {"same_files": False, "ok": False}
    if tolerance == 0:
        differ = sum(a[k].read_bytes() != b[k].read_bytes() for k in a)
        return {"same_files": True, "identical": differ == 0, "ok": differ == 0, "differing_files": differ}
    worst = 0
    for k in a:
        x = np.asarray(Image.open(a[k]), dtype=np.int16)
        y = np.asarray(Image.open(b[k]), dtype=np.int16)
        worst = max(worst, int(np.abs(x - y).max()) if x.shape == y.shape else 256)
    return {"same_files": True, "max_difference_255": worst, "ok": worst <= tolerance}


# ---- the run

def bench_apply(run_dir, data, scratch, images: int = 10000, memory_images: int | None = 50000,
                ray: bool = True, ray_cpus: int = 2) -> dict:
    from ..transform.engines import LocalEngine, RayEngine
    run_dir, data, scratch = Path(run_dir), Path(data), Path(scratch).resolve()
    if images < 1:
        raise CifarlabError(f"--images must be a positive integer, got {images}")
    _refuse_scratch_in_repo(scratch)
    if ray:
        try:
            import ray as _  # noqa: F401
        except ImportError:
            print('bench-apply: Ray is not installed (pip install "cifarlab[ray]"): its row is left out',
                  file=sys.stderr)
            ray = False
    rows, checks = [], {}
    sizes = [images] + ([memory_images] if memory_images and memory_images != images else [])
    inputs = {count: tile_folder(data, scratch / f"input-{count}", count) for count in sizes}
    for old in scratch.glob("out-*"):   # deleted before any pass: on a disk mounted with `discard`
        shutil.rmtree(old)               # the deletions' cost lands on whatever runs next
    engines = {"workers1": lambda: LocalEngine(1), "workers2": lambda: LocalEngine(2),
               "ray": lambda: RayEngine(num_cpus=ray_cpus)}
    names = {"workers1": "apply --workers 1", "workers2": "apply --workers 2",
             "ray": f"apply --engine ray ({ray_cpus} CPUs)"}
    src, out = scratch / f"input-{images}", {name: scratch / f"out-{images}-{name}"
                                              for name in ("loop", *engines)}
    _timed("loop (PIL + v2)", lambda: user_loop(run_dir, inputs[images], src, out["loop"]), rows, images)
    _timed("floor: write the files only", lambda: write_floor(inputs[images], src, scratch / f"out-{images}-floor"),
           rows, images)
    for name in ("workers1", "workers2", "ray") if ray else ("workers1", "workers2"):
        _timed(names[name], _engine_pass(run_dir, src, out[name], engines[name]()), rows, images)
    checks["workers1 == workers2"] = compare_outputs(out["workers2"], out["workers1"])
    if ray:
        checks["ray == workers2"] = compare_outputs(out["workers2"], out["ray"])
    checks["workers2 within 1/255 of loop"] = compare_outputs(out["loop"], out["workers2"], tolerance=1)
    for count in sizes if memory_images else ():
        for name in ("workers2", "ray") if ray else ("workers2",):
            _timed(names[name], _engine_pass(run_dir, scratch / f"input-{count}",
                                             scratch / f"out-{count}-{name}-memory", engines[name]()),
                   rows, count, memory=True)
    loop = next(r for r in rows if r["engine"].startswith("loop"))
    local = {(r["images"], r["memory_pass"]): r for r in rows if r["engine"].startswith("apply --workers 2")}
    for r in rows:
        if r["images"] == images and not r["memory_pass"]:
            r["vs_loop"] = r["images_per_second"] / loop["images_per_second"]
        if r["engine"].startswith("apply --engine ray"):
            twin = local[r["images"], r["memory_pass"]]
            r["vs_local_engine"] = r["images_per_second"] / twin["images_per_second"]
            r["vs_local_engine_whole_call"] = r["whole_call_images_per_second"] / twin["whole_call_images_per_second"]
    results = {"run_dir": str(run_dir), "data": str(data), "images": images, "memory_images": memory_images,
               "rows": rows, "checks": checks, "machine": _machine() | {"scratch_filesystem": _filesystem(scratch)}}
    write_json(scratch / "bench-apply.json", results)
    text = render(results)
    write_text(scratch / "bench-apply.md", text)
    return results | {"markdown": text}


def _filesystem(path: Path) -> str:
    """The file system under `path` and its options: creating 10,000 small files costs ~0.3-0.6 ms
    each in the kernel on this machine's ext4 (mounted with discard), ~0.02 ms on tmpfs."""
    best, found = "", "unknown"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                _, where, kind, options = line.split()[:4]
                if (str(path) == where or str(path).startswith(where.rstrip("/") + "/")) and len(where) > len(best):
                    best, found = where, f"{kind} at {where} ({options})"
    except OSError:
        pass
    return found


def _machine() -> dict:
    from .timing import cpu_model
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("PIL", "ray", "torchvision"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), **versions}


def render(results: dict) -> str:
    m = results["machine"]
    lines = [f"transform apply vs the per-image loop: {m['cpu']}, {m['cores']} cores; "
             + ", ".join(f"{k} {v}" for k, v in m.items() if k not in ("cpu", "cores", "scratch_filesystem")),
             f"Scratch folder's file system: {m.get('scratch_filesystem', 'unknown')}. Timed passes run without the "
             "memory sampler; peak memory comes from separate passes (rows marked 'memory pass').", "",
             "| engine | files | images/s | vs loop | vs local engine | start-up + shutdown (s) "
             "| vs local engine, start-up and shutdown counted | peak PSS, all processes (MB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        lines.append(f"| {r['engine']} | {r['images']:,} | {r['images_per_second']:,.0f} | "
                     + (f"{r['vs_loop']:.2f}x" if "vs_loop" in r else "") + " | "
                     + (f"{r['vs_local_engine']:.2f}x" if "vs_local_engine" in r else "") + " | "
                     + (f"{r['startup_seconds']:.1f} + {r['shutdown_seconds'] or 0:.1f}"
                        if r.get("startup_seconds") else "") + " | "
                     + (f"{r['vs_local_engine_whole_call']:.2f}x" if "vs_local_engine_whole_call" in r else "") + " | "
                     + (f"{r['peak_pss_mb']:,.0f}" if r.get("peak_pss_mb") is not None else "") + " |")
    lines += ["", "Outputs: " + "; ".join(f"{name}: {'ok' if c['ok'] else 'FAILED'} "
                                          f"({json.dumps({k: v for k, v in c.items() if k != 'ok'})})"
                                          for name, c in results["checks"].items())]
    return "\n".join(lines) + "\n"
