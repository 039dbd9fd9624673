"""Artifacts for use without cifarlab, and where a user may write them.

`model.pt2` is a `torch.export` program. It is written without the pickled sample inputs
that `torch.export.save` would otherwise store, so the files cifarlab writes hold no pickle.
That does not make *loading* a `.pt2` safe: `torch.export.load` falls back to unpickling
with `weights_only=False`, so a crafted `.pt2` runs code when loaded. Load `.pt2` files only
from sources you trust; for a model from anyone else use `model.pt` through `cifarlab.load`
(read with `weights_only=True`). docs/reliability.md keeps the table.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .errors import CifarlabError
from .io import _atomic

# files of a run folder that no export may replace, even with --overwrite
RUN_ARTIFACTS = ("model.pt", "last.pt", "config.json", "metrics.json", "report.md")
UNTRUSTED_PT2 = "load .pt2 files only from sources you trust: torch.export.load can run code in a crafted file"


def save_program(module: torch.nn.Module, example: torch.Tensor, path) -> Path:
    """A `torch.export` program with a dynamic batch size, saved without sample inputs."""
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    program.example_inputs = None  # no pickled tensors in the archive
    return _atomic(Path(path), lambda tmp: torch.export.save(program, tmp))


def export_target(run_dir: Path, out: str | None, default_name: str, overwrite: bool) -> Path:
    """Where an export of `run_dir` may be written: never over the run's own training files,
    never over an existing file without `overwrite`, never onto a folder, and only with the
    format's own suffix (so a typo cannot replace a photo or a document)."""
    target = Path(out) if out else run_dir / default_name
    suffix = Path(default_name).suffix
    if target.is_dir():
        raise CifarlabError(f"--out {str(target)!r} is a folder: expected a file path such as "
                            f"{str(target / default_name)!r}")
    if target.suffix != suffix:
        raise CifarlabError(f"--out {str(target)!r} must end in {suffix}")
    if target.exists():
        protected = {(run_dir / name).resolve() for name in RUN_ARTIFACTS}
        if target.resolve() in protected:
            raise CifarlabError(f"refusing to overwrite the run's own {target.name}: choose another --out")
        if not overwrite:
            raise CifarlabError(f"{str(target)!r} exists; add --overwrite to replace it")
    return target
