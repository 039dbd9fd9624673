"""Tensor-shard output of `transform apply --output-format npy`.

Shard k holds inputs [k * shard_size, (k + 1) * shard_size) of the job's input order:

    DST/shards.json          the plan: format, shard size, inputs, a digest of their paths, shape
    DST/shard-00000.npy      uint8 (n, C, H, W): the shard's readable inputs, in order
    DST/shard-00000.json     its index: {"sources": [input of each row], "unreadable": [...]}

Each file is written atomically; the index is written after the array, so a shard is done
exactly when its index exists, and a re-run skips done shards and redoes the rest (an array
without its index, left by a kill between the two writes, is rewritten). Read a shard with
`numpy.load(path)`; `load_shard` gives the array with its sources.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..errors import CifarlabError
from ..io import _atomic, read_json, remove_stale_temporaries, write_json

FORMAT = "cifarlab-shards/1"


def shard_paths(dst: Path, k: int) -> tuple[Path, Path]:
    return dst / f"shard-{k:05d}.npy", dst / f"shard-{k:05d}.json"


def plan_shards(files: list[Path], dst: Path, shard_size: int, out_shape, overwrite: bool
                ) -> tuple[list[dict], int, list[str]]:
    """(tasks of the shards to write, inputs in shards already done, those shards' unreadable
    inputs). Writes DST/shards.json; refuses a DST that holds another plan's shards."""
    plan = {"format": FORMAT, "shard_size": shard_size, "inputs": len(files),
            "inputs_sha256": hashlib.sha256("\n".join(map(str, files)).encode()).hexdigest(),
            "shape": list(out_shape), "dtype": "uint8"}
    manifest = dst / "shards.json"
    if manifest.exists() and not overwrite:
        old = read_json(manifest)
        if {k: old.get(k) for k in plan} != plan:
            raise CifarlabError(f"{str(dst)!r} holds the shards of another job (other inputs or shard size); "
                                f"choose another DST, or --overwrite to replace them")
    if dst.is_dir():
        remove_stale_temporaries(dst)
    if overwrite:
        for stale in list(dst.glob("shard-*.npy")) + list(dst.glob("shard-*.json")):
            stale.unlink()
    write_json(manifest, plan)
    tasks, existing, failures = [], 0, []
    for k, start in enumerate(range(0, len(files), shard_size)):
        inputs = [str(f) for f in files[start:start + shard_size]]
        array, index = shard_paths(dst, k)
        if index.exists():
            existing += len(inputs)
            failures += read_json(index).get("unreadable", [])
            continue
        tasks.append({"inputs": inputs, "shard": str(array), "index": str(index)})
    return tasks, existing, failures


def write_shard(task: dict, images: np.ndarray, kept: list[int], failed: list[str]) -> None:
    def save(tmp):
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(images, dtype=np.uint8))
    _atomic(Path(task["shard"]), save)
    write_json(task["index"], {"sources": [task["inputs"][i] for i in kept], "unreadable": failed})


def load_shard(path) -> tuple[np.ndarray, list[str]]:
    """A shard's uint8 array and the input path of each row."""
    path = Path(path)
    index = json.loads(path.with_suffix(".json").read_text())
    return np.load(path), index["sources"]
