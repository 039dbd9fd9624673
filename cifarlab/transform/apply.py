"""Run a trained network over a tree of images, streaming: nothing is held whole in memory.

    cifarlab transform apply RUN_DIR SRC DST [--workers N]

The job, written once:
- **what is read**: every image file under SRC (any format Pillow reads; the same 32x32 rule as
  training: the shorter side scaled, then the centre square);
- **what is written**: DST mirrors SRC's tree, each image as `<stem>.png`. Two inputs of one
  folder that would share a name (`x.jpg`, `x.png`) both keep their suffix (`x.jpg.png`,
  `x.png.png`). The whole plan is checked before anything is written: no output may land
  inside SRC and no two inputs may map to one output;
- **what is skipped**: outputs that exist already (so a re-run finishes an interrupted job),
  unless `overwrite`; unreadable files are listed in `DST/apply-failures.txt` and counted,
  and never stop the job.

Files are decoded and encoded in worker processes (`workers`, default: the cores), in chunks
of one model batch; the main process batches them through the network as they arrive. Every
output is written atomically, so an interrupted job leaves no half-written file, and
`DST/apply-summary.json` records images, skipped, failed, seconds, images/s and workers.
"""
from __future__ import annotations

import multiprocessing
import os
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data.sources import _image_files
from ..devices import resolve_device
from ..errors import CifarlabError
from ..io import remove_stale_temporaries, write_json, write_text
from ..imagefiles import decode_chunk, encode_chunk, init_worker
from .artifact import build_from_checkpoint, read_checkpoint

PENDING_PER_WORKER = 2   # decoded or encoded chunks in flight per worker: bounds memory


@dataclass
class ApplyResult:
    images: int = 0            # inputs found
    written: int = 0
    existing: int = 0          # outputs already there (kept: not overwritten)
    unreadable: int = 0
    seconds: float = 0.0
    workers: int = 0

    @property
    def images_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


def plan_outputs(src: Path, files: list[Path], dst: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs for `files` under `src`; a one-line error when the plan is unsafe."""
    relative = [f.relative_to(src) for f in files]
    stems = Counter(r.with_suffix(".png") for r in relative)
    outputs = [dst / (r.with_suffix(".png") if stems[r.with_suffix(".png")] == 1 else r.with_name(r.name + ".png"))
               for r in relative]
    seen: dict[Path, Path] = {}
    for file, out in zip(files, outputs):
        if out in seen:
            raise CifarlabError(f"{str(seen[out])!r} and {str(file)!r} would both be written to {str(out)!r}; "
                                f"rename one of them")
        seen[out] = file
        if src == out.resolve() or src in out.resolve().parents:
            raise CifarlabError(f"refusing to write {str(out)!r}: it lies inside the source folder {str(src)!r}; "
                                f"choose a DST outside it")
    return list(zip(files, outputs))


def to_uint8(outputs: torch.Tensor) -> np.ndarray:
    """The rounding rule: round(clamp(output, 0, 1) * 255); a 2-channel output keeps channel 0."""
    out = outputs.float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    if out.shape[1] not in (1, 3):
        out = out[:, :1]
    return out.numpy()


# ---- the job

def apply_folder(run_dir: Path, src: Path, dst: Path, batch_size: int = 256, device: str = "auto",
                 overwrite: bool = False, workers: int | None = None, quiet: bool = False) -> ApplyResult:
    """See the module docstring."""
    from .. import model_file
    model = build_from_checkpoint(read_checkpoint(model_file(run_dir)))
    if batch_size < 1:
        raise CifarlabError(f"--batch-size must be a positive integer, got {batch_size}")
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if workers < 0:
        raise CifarlabError(f"--workers must be 0 (decode in this process) or more, got {workers}")
    if not src.is_dir():
        raise CifarlabError(f"source folder {str(src)!r} does not exist or is not a folder")
    src, dst = src.resolve(), dst.resolve()
    if dst == src or src in dst.parents:
        raise CifarlabError(f"refusing to write into the source folder: choose a DST outside {src}")
    if dst.exists() and not dst.is_dir():
        raise CifarlabError(f"DST {str(dst)!r} is a file: expected a folder")
    files = _image_files(src)
    if not files:
        raise CifarlabError(f"source folder {str(src)!r} holds no images")
    plan = plan_outputs(src, files, dst)
    result = ApplyResult(images=len(plan), workers=workers)
    if dst.exists():
        for folder in {target.parent for _, target in plan if target.parent.is_dir()}:
            remove_stale_temporaries(folder)   # left by a job that was killed mid-write
    if not overwrite:
        todo = [(f, o) for f, o in plan if not o.exists()]
        result.existing = len(plan) - len(todo)
        plan = todo
    dev = resolve_device(device)
    model.to(dev)
    started = time.perf_counter()
    failures: list[str] = []
    chunks = [plan[i:i + batch_size] for i in range(0, len(plan), batch_size)]
    bar = tqdm(total=len(plan), desc="apply", unit="img", disable=quiet or None)
    try:
        with _executor(workers) as run:
            for chunk, (images, kept, failed) in run.decode(chunks, model.in_shape[1]):
                failures += failed
                if len(kept):
                    with torch.inference_mode():
                        outputs = to_uint8(model(torch.from_numpy(images).to(dev)))
                    run.encode([str(chunk[i][1]) for i in kept], outputs)
                    result.written += len(kept)
                bar.update(len(chunk))
                bar.set_postfix(failed=len(failures))
            run.finish()
    finally:
        bar.close()
        result.seconds = time.perf_counter() - started
        result.unreadable = len(failures)
        if failures:
            write_text(dst / "apply-failures.txt", "".join(f"{f}\n" for f in failures))
        if result.written or result.unreadable or dst.exists():
            write_json(dst / "apply-summary.json", asdict(result) | {"images_per_second": result.images_per_second})
    if failures:
        warnings.warn(f"skipped {len(failures)} unreadable image(s), listed in {dst / 'apply-failures.txt'}",
                      stacklevel=2)
    return result


class _InProcess:
    """workers=0: decode and encode in this process (the same job, for debugging and tests)."""

    def decode(self, chunks, size):
        for chunk in chunks:
            yield chunk, decode_chunk([str(f) for f, _ in chunk], size)

    def encode(self, targets, images):
        encode_chunk(targets, images)

    def finish(self):
        pass


class _ProcessPool:
    """Decoding and encoding in `workers` forked processes, with a bounded number of chunks in
    flight. Forked, as torch's DataLoader workers are: a spawned (or fork-server) worker re-runs
    the command's main module, importing torch again, seconds per worker. The workers run
    Pillow and NumPy, and torch only to resize images that are not 32x32, with one thread."""

    def __init__(self, workers: int):
        self.pool = multiprocessing.get_context("fork").Pool(workers, initializer=init_worker)
        self.limit = workers * PENDING_PER_WORKER
        self.pending = []

    def decode(self, chunks, size):
        ahead = []
        for chunk in chunks:
            ahead.append((chunk, self.pool.apply_async(decode_chunk, ([str(f) for f, _ in chunk], size))))
            if len(ahead) >= self.limit:
                chunk0, job = ahead.pop(0)
                yield chunk0, job.get()
        for chunk0, job in ahead:
            yield chunk0, job.get()

    def encode(self, targets, images):
        self.pending.append(self.pool.apply_async(encode_chunk, (targets, images)))
        while len(self.pending) >= self.limit:
            self.pending.pop(0).get()

    def finish(self):
        for job in self.pending:
            job.get()
        self.pending = []

    def close(self, ok: bool):
        if ok:
            self.pool.close()
        else:
            self.pool.terminate()   # Ctrl-C: workers stop; atomic writes leave no partial file
        self.pool.join()


class _executor:
    def __init__(self, workers: int):
        self.workers = workers

    def __enter__(self):
        self.run = _ProcessPool(self.workers) if self.workers > 0 else _InProcess()
        return self.run

    def __exit__(self, kind, error, trace):
        if isinstance(self.run, _ProcessPool):
            self.run.close(ok=kind is None)
