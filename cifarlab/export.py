"""Artifacts for use without cifarlab, and where a user may write them.

`model.onnx` is written by PyTorch's recommended exporter (`torch.onnx.export(...,
dynamo=True)`, onnxscript) with a dynamic batch dimension, and checked in onnxruntime against
the PyTorch model on held-out images before the command succeeds. It is protobuf: it holds no
code, so it is safe to load from anyone.

`model.pt2` is a `torch.export` program. It is written without the pickled sample inputs
that `torch.export.save` would otherwise store, so the files cifarlab writes hold no pickle.
That does not make *loading* a `.pt2` safe: `torch.export.load` falls back to unpickling
with `weights_only=False`, so a crafted `.pt2` runs code when loaded. Load `.pt2` files only
from sources you trust; for a model from anyone else use `model.pt` through `cifarlab.load`
(read with `weights_only=True`). docs/reliability.md keeps the table.
"""
from __future__ import annotations

import os
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


FORMATS = {"pt2": "model.pt2", "onnx": "model.onnx"}
ONNX_EXTRA = "pip install 'cifarlab[onnx]'"


def save_onnx(module: torch.nn.Module, example: torch.Tensor, path) -> Path:
    """An ONNX model with a dynamic batch dimension; an operator ONNX cannot express is named in one line."""
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError:
        raise CifarlabError(f"ONNX export needs onnx and onnxscript: {ONNX_EXTRA}") from None
    batch = torch.export.Dim("batch", min=1)
    try:
        program = torch.onnx.export(module.eval(), (example,), dynamo=True, verbose=False,
                                    dynamic_shapes=({0: batch},))
    except Exception as e:
        raise CifarlabError(f"cannot export to ONNX: {str(e).strip().splitlines()[0][:300]}") from None
    return _atomic(Path(path), lambda tmp: program.save(tmp))


def onnx_opset(path) -> int:
    import onnx
    return next(o.version for o in onnx.load(str(path), load_external_data=False).opset_import if o.domain in ("", "ai.onnx"))


def check_onnx(path, module: torch.nn.Module, images: torch.Tensor, providers=("CPUExecutionProvider",)) -> dict:
    """Run the ONNX file in onnxruntime on `images` and compare with `module`: max |difference|
    of the outputs and the share of rows whose top-1 agrees (for classifiers)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise CifarlabError(f"checking an ONNX export needs onnxruntime: {ONNX_EXTRA}") from None
    session = ort.InferenceSession(str(path), providers=list(providers))
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: images.float().numpy()})[0])
    with torch.inference_mode():
        want = module.eval()(images.float()).float()
    return {"max_abs_difference": float((got - want).abs().max()),
            "top1_agreement": float((got.flatten(1).argmax(1) == want.flatten(1).argmax(1)).double().mean()),
            "images": len(images), "opset": onnx_opset(path)}


def heldout_images(run_dir: Path, count: int = 256) -> tuple[torch.Tensor, str]:
    """The first `count` held-out images of the run (its own data and validation split), float
    in [0, 1]; random images, said so, when the run's data is not on this machine."""
    from .data import load_images, validation_split
    from .io import read_json
    config = read_json(run_dir / "config.json") if (run_dir / "config.json").is_file() else {}
    try:
        pool = load_images(config["data"], "train", config.get("data_root"))
        _, val = validation_split(len(pool), config.get("val_fraction", 0.1), config.get("seed", 0))
        return pool.images[val[:count]].float().div(255), f"{min(count, len(val))} held-out images of {pool.name}"
    except (CifarlabError, KeyError, TypeError):
        return torch.rand(count, 3, 32, 32, generator=torch.Generator().manual_seed(0)), \
            f"{count} random images (the run's data is not here)"


def export_run(run, fmt: str, out: str | None = None, overwrite: bool = False,
               kind: str | None = None) -> tuple[Path, dict | None]:
    """Export the network of a run (transform or classify) as `fmt` (pt2 or onnx). An ONNX file is
    checked in onnxruntime before it is put in place: a transform must agree to 1e-5 (max
    |difference|), a classifier to 1e-4 on the logits with the same top-1 on every image."""
    from . import model_file
    from .checkpoints import read_checkpoint
    if fmt not in FORMATS:
        raise CifarlabError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    model_path = model_file(run)
    ckpt = read_checkpoint(model_path, f"cifarlab-{kind}/1" if kind else None)
    if ckpt["format"] == "cifarlab-classify/1":
        from .classify.artifact import build_from_checkpoint
    else:
        from .transform.artifact import build_from_checkpoint
    model = build_from_checkpoint(ckpt)
    target = export_target(model_path.parent, out, FORMATS[fmt], overwrite)
    transform = hasattr(model, "in_shape")
    module = model.net if transform else model   # the transform's float path; the whole classifier
    example = torch.rand(2, *(model.in_shape if transform else (3, 32, 32)))
    if fmt == "pt2":
        return save_program(module, example, target), None
    unchecked = target.with_name(f".{target.stem}.unchecked{target.suffix}")
    try:
        save_onnx(module, example, unchecked)
        images, where = heldout_images(model_path.parent)
        check = check_onnx(unchecked, module, images) | {"checked_on": where}
        atol = 1e-5 if transform else 1e-4
        if check["max_abs_difference"] > atol or (not transform and check["top1_agreement"] < 1):
            raise CifarlabError(f"the ONNX export disagrees with the PyTorch model on {where} (max |difference| "
                                f"{check['max_abs_difference']:.3g}, allowed {atol:g}; top-1 agreement "
                                f"{check['top1_agreement']:.1%}); nothing was written")
        os.replace(unchecked, target)
    finally:
        unchecked.unlink(missing_ok=True)
    return target, check
