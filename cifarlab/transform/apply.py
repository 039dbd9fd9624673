"""Run a trained network over many image files, streaming: nothing is held whole in memory.

    cifarlab transform apply RUN_DIR SRC DST [--workers N] [--output-format png|npy]
                                             [--engine local|ray] [--ray-address ADDR]

The job, written once here; the engines (`cifarlab.transform.engines`: a local process pool,
or Ray) only decide where each step runs:

- **what is read**: SRC is a folder (every image file under it, any format Pillow reads), or a
  text file listing image paths, one a line (relative paths are relative to the list's
  folder; blank lines and lines starting with `#` are ignored). Each image follows the
  training rule for size: the shorter side scaled, then the centre square.
- **what is written**, `--output-format png` (default): DST mirrors the inputs' tree, each
  image as `<stem>.png`: relative to SRC for a folder, relative to the listed files' deepest
  common folder for a list. Two inputs of one folder that would share a name (`x.jpg`,
  `x.png`) both keep their suffix (`x.jpg.png`, `x.png.png`).
  `--output-format npy`: uint8 shards `DST/shard-00000.npy` of (n, C, H, W), `--shard-size`
  inputs each in input order (the folder's sorted order, or the list's order), each with its
  index `DST/shard-00000.json` (`sources`: the input of each row; `unreadable`: the inputs
  left out); `DST/shards.json` states the plan (shard size, inputs, a digest of their paths).
  Pixel values, both formats: round(clamp(model(x / 255), 0, 1) * 255), uint8 in and out; a
  2-channel output keeps channel 0.
- **what is refused** before anything is written: DST inside SRC (or, for a list, inside a
  folder that holds a listed file), two inputs mapped to one output, and DST holding shards
  of another plan (other inputs or shard size) unless `--overwrite`.
- **what is skipped**: outputs that exist already, so a re-run finishes an interrupted job:
  a PNG that exists, a shard whose index exists (the index is written after the shard).
  `--overwrite` redoes everything. Unreadable files (corrupt, empty, not images, missing from
  a list) are listed in `DST/apply-failures.txt`, counted, and never stop the job.

Every file is written atomically (`cifarlab.io`), so an interrupted job (Ctrl-C, SIGKILL, a
full disk) leaves no half-written output, and `DST/apply-summary.json` records images,
written, existing, unreadable, seconds, images/s, the engine and its start-up and shutdown seconds.
"""
from __future__ import annotations

import os
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data.sources import IMAGE_SUFFIXES, _image_files
from ..devices import resolve_device
from ..errors import CifarlabError
from ..imagefiles import decode_chunk, encode_chunk
from ..io import remove_stale_temporaries, write_json, write_text
from . import shards
from .artifact import build_from_checkpoint, read_checkpoint

OUTPUT_FORMATS = ("png", "npy")


@dataclass
class ApplyResult:
    images: int = 0            # inputs found
    written: int = 0
    existing: int = 0          # outputs already there (kept: not overwritten)
    unreadable: int = 0
    seconds: float = 0.0       # the job, without the engine's start-up
    workers: int = 0
    engine: str = "local"
    startup_seconds: float = 0.0   # the engine's own start-up (Ray: starting or joining the cluster)
    shutdown_seconds: float = 0.0  # and its shutdown (Ray: ray.shutdown of a local instance)
    output_format: str = "png"

    @property
    def images_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


# ---- what is read

def find_inputs(src: Path) -> tuple[list[Path], Path, list[Path]]:
    """(input files, the root their outputs mirror, the folders DST may not lie in)."""
    if src.is_dir():
        root = src.resolve()
        files = _image_files(root)
        if not files:
            raise CifarlabError(f"source folder {str(src)!r} holds no images")
        return files, root, [root]
    if not src.is_file():
        raise CifarlabError(f"source {str(src)!r} does not exist: expected a folder of images or a text file "
                            f"listing image paths")
    if src.suffix.lower() in IMAGE_SUFFIXES:
        raise CifarlabError(f"source {str(src)!r} is an image file: expected a folder of images or a text file "
                            f"listing image paths, one a line")
    try:
        lines = src.read_text().splitlines()
    except UnicodeDecodeError:
        raise CifarlabError(f"source {str(src)!r} is not a text file: expected a folder of images or a list "
                            f"of image paths, one a line") from None
    except OSError as e:
        raise CifarlabError(f"cannot read {str(src)!r}: {e.strerror or type(e).__name__}") from None
    base = src.resolve().parent
    files = [Path(os.path.abspath(base / line.strip())) for line in lines
             if line.strip() and not line.strip().startswith("#")]
    if not files:
        raise CifarlabError(f"the list {str(src)!r} names no files")
    if len(set(files)) != len(files):
        twice = next(f for f, n in Counter(files).items() if n > 1)
        raise CifarlabError(f"the list {str(src)!r} names {str(twice)!r} more than once")
    folders = sorted({f.parent for f in files})
    return files, Path(os.path.commonpath(folders)), folders


def plan_outputs(root: Path, files: list[Path], dst: Path, forbidden: list[Path] | None = None
                 ) -> list[tuple[Path, Path]]:
    """(input, output PNG) pairs mirroring `files` under `root`; a one-line error when unsafe.
    Path arithmetic on strings, and the safety check once per output folder: with pathlib per
    file, planning 10,000 outputs took longer than applying the network to them."""
    forbidden = set(forbidden or [root])
    prefix, base = os.path.join(str(root), ""), str(dst)
    relative = [str(f)[len(prefix):] if str(f).startswith(prefix) else str(f.relative_to(root)) for f in files]
    pngs = [os.path.splitext(r)[0] + ".png" for r in relative]
    stems = Counter(pngs)
    outputs = [os.path.join(base, png if stems[png] == 1 else r + ".png") for r, png in zip(relative, pngs)]
    seen: dict[str, Path] = {}
    for file, out in zip(files, outputs):
        if out in seen:
            raise CifarlabError(f"{str(seen[out])!r} and {str(file)!r} would both be written to {out!r}; "
                                f"rename one of them")
        seen[out] = file
    for folder in {os.path.dirname(out) for out in outputs}:   # DST above SRC: SRC/src/x -> SRC/x
        inside = next((p for p in (Path(folder), *Path(folder).parents) if p in forbidden), None)
        if inside is not None:
            example = next(out for out in outputs if os.path.dirname(out) == folder)
            raise CifarlabError(f"refusing to write {example!r}: it lies inside the source folder {str(inside)!r}; "
                                f"choose a DST outside it")
    return [(file, Path(out)) for file, out in zip(files, outputs)]


def existing_files(folders) -> set[str]:
    """Every path in `folders` that exists, one directory listing per folder (not a stat per file)."""
    found: set[str] = set()
    for folder in folders:
        try:
            with os.scandir(folder) as entries:
                found.update(os.path.join(folder, e.name) for e in entries)
        except OSError:
            pass
    return found


def _refuse_dst_inside_sources(dst: Path, forbidden: list[Path], listed: bool) -> None:
    for folder in forbidden:
        if dst == folder or folder in dst.parents:
            if listed:
                raise CifarlabError(f"refusing to write into {str(folder)!r}, a folder that holds listed inputs: "
                                    f"choose a DST outside it")
            raise CifarlabError(f"refusing to write into the source folder: choose a DST outside {folder}")


# ---- the steps every engine runs: read a task, run the model, write the task

def read_task(task: dict, size: int) -> tuple[np.ndarray, list[int], list[str]]:
    """uint8 (n, 3, size, size) of the task's readable inputs, their positions, the unreadable ones."""
    return decode_chunk(task["inputs"], size)


def run_model(model, images: np.ndarray, device: torch.device) -> np.ndarray:
    """uint8 in, uint8 out (`ImageTransformNet.to_uint8`: round(clamp(model, 0, 1) * 255))."""
    if len(images) == 0:
        return np.zeros((0, *model.out_shape), np.uint8)
    with torch.inference_mode():
        return model.to_uint8(torch.from_numpy(images).to(device)).cpu().numpy()


def write_task(task: dict, outputs: np.ndarray, kept: list[int], failed: list[str]) -> int:
    """Write a task's outputs atomically; returns how many images were written."""
    if "shard" in task:
        shards.write_shard(task, outputs, kept, failed)
    else:
        encode_chunk([task["outputs"][i] for i in kept], outputs)
    return len(kept)


# ---- the job

def apply_folder(run_dir: Path, src: Path, dst: Path, batch_size: int = 256, device: str = "auto",
                 overwrite: bool = False, workers: int | None = None, quiet: bool = False,
                 output_format: str = "png", shard_size: int = 1024, engine=None) -> ApplyResult:
    """See the module docstring. `engine`: an engine of `cifarlab.transform.engines`
    [default: the local one with `workers` processes]."""
    from .. import model_file
    from .engines import LocalEngine
    ckpt = read_checkpoint(model_file(run_dir))
    model = build_from_checkpoint(ckpt)
    if batch_size < 1:
        raise CifarlabError(f"--batch-size must be a positive integer, got {batch_size}")
    if shard_size < 1:
        raise CifarlabError(f"--shard-size must be a positive integer, got {shard_size}")
    if output_format not in OUTPUT_FORMATS:
        raise CifarlabError(f"--output-format must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}")
    if engine is None:
        workers = workers if workers is not None else (os.cpu_count() or 1)
        if workers < 0:
            raise CifarlabError(f"--workers must be 0 (decode in this process) or more, got {workers}")
        engine = LocalEngine(workers)
    src, dst = Path(src), Path(dst).resolve()
    files, root, forbidden = find_inputs(src)
    _refuse_dst_inside_sources(dst, forbidden, listed=not src.is_dir())
    if dst.exists() and not dst.is_dir():
        raise CifarlabError(f"DST {str(dst)!r} is a file: expected a folder")
    size = model.in_shape[1]
    result = ApplyResult(images=len(files), engine=engine.name, output_format=output_format)
    if output_format == "png":
        plan = plan_outputs(root, files, dst, forbidden)
        folders = {os.path.dirname(str(target)) for _, target in plan} if dst.exists() else set()
        for folder in folders:
            if os.path.isdir(folder):
                remove_stale_temporaries(Path(folder))   # left by a job that was killed mid-write
        if not overwrite:
            done = existing_files(folders)
            todo = [(f, o) for f, o in plan if str(o) not in done]
            result.existing = len(plan) - len(todo)
            plan = todo
        tasks = [{"inputs": [str(f) for f, _ in plan[i:i + batch_size]],
                  "outputs": [str(o) for _, o in plan[i:i + batch_size]]} for i in range(0, len(plan), batch_size)]
        earlier_failures: list[str] = []
    else:
        tasks, result.existing, earlier_failures = shards.plan_shards(files, dst, shard_size, model.out_shape,
                                                                       overwrite)
    dev = resolve_device(device)
    model.to(dev)
    failures: list[str] = []
    bar = tqdm(total=sum(len(t["inputs"]) for t in tasks), desc="apply", unit="img", disable=quiet or None)
    started = time.perf_counter()
    try:
        with engine.session(ckpt, dev, size) as run:
            result.startup_seconds, result.workers = run.startup_seconds, run.workers
            started = time.perf_counter()
            try:
                for task, written, failed in run.run(tasks, model):
                    result.written += written
                    failures += failed
                    bar.update(len(task["inputs"]))
                    bar.set_postfix(failed=len(failures))
            finally:
                result.seconds = time.perf_counter() - started   # the engine's shutdown apart, as its start-up
        result.shutdown_seconds = time.perf_counter() - started - result.seconds
    finally:
        bar.close()
        result.seconds = result.seconds or time.perf_counter() - started
        failures = earlier_failures + failures
        result.unreadable = len(failures)
        if failures:
            write_text(dst / "apply-failures.txt", "".join(f"{f}\n" for f in failures))
        elif (dst / "apply-failures.txt").exists():
            (dst / "apply-failures.txt").unlink()
        if result.written or result.unreadable or dst.exists():
            write_json(dst / "apply-summary.json", asdict(result) | {"images_per_second": result.images_per_second})
    if failures:
        warnings.warn(f"skipped {len(failures)} unreadable image(s), listed in {dst / 'apply-failures.txt'}",
                      stacklevel=2)
    return result

