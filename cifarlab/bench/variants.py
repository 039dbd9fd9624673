"""Options for the model's fastest path, each measured and scored on its own.

`plain` is the artifact exactly as `cifarlab.load` returns it; `checked` is the same with
the opt-in value-range check of the first image of each batch (`cifarlab.inputs`), so the two
rows state what that check would cost on the hot path. `onnxruntime` is the network exported
to ONNX (`cifarlab.export.save_onnx`, as `transform export --format onnx` writes it) run by
onnxruntime's CPU execution provider (its CUDA one on a GPU, when installed); it is left out
when onnxruntime is absent. `compile` is opt-in: on a
2-core CPU it took ~24 s to compile, gave no gain at batch 1024 and was ~9x slower at batch 1.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import CifarlabError

DEFAULT_VARIANTS = ("plain", "checked", "uint8", "channels_last", "half", "onnxruntime")
ALL_VARIANTS = DEFAULT_VARIANTS + ("compile",)
GPU_ONLY = {"half"}


@dataclass
class Variant:
    name: str
    model: Callable[[torch.Tensor], torch.Tensor]
    images: torch.Tensor    # the workload in the form this variant takes, on the CPU


def parse_variants(text: str | None) -> tuple[str, ...]:
    if text is None or text == "default":
        return DEFAULT_VARIANTS
    names = ALL_VARIANTS if text == "all" else tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [v for v in names if v not in ALL_VARIANTS]
    if unknown or not names:
        raise CifarlabError(f"unknown fast-path variant(s) {', '.join(unknown) or '(none)'}; "
                            f"valid: {', '.join(ALL_VARIANTS)}, default or all")
    return names


def build_variant(name: str, model: torch.nn.Module, workload, device: torch.device) -> Variant | None:
    """The variant on `device`, or None where it does not apply (half precision on the CPU)."""
    if name in GPU_ONLY and device.type == "cpu":
        return None
    model = model.to(device)
    if name == "plain":
        return Variant(name, model, workload.inputs)
    if name == "checked":
        checked = copy.copy(model)  # shares the weights; only the check differs
        checked.range_check = "first"
        return Variant(name, checked, workload.inputs)
    if name == "uint8":
        return Variant(name, model, workload.stored)
    if name == "channels_last":
        # A copy: Module.to(memory_format=...) converts 4-D weights in place, which would
        # silently turn the `plain` row of a convolutional model into a channels-last one.
        return Variant(name, copy.deepcopy(model).to(memory_format=torch.channels_last),
                       workload.inputs.contiguous(memory_format=torch.channels_last))
    if name == "half":
        return Variant(name, half_precision(model), workload.inputs)
    if name == "onnxruntime":
        return _onnxruntime_variant(model, workload, device)
    if name == "compile":
        return Variant(name, torch.compile(model), workload.inputs)
    raise ValueError(name)


def half_precision(model: torch.nn.Module) -> Callable:
    """The network itself in float16, fed float16 images. The artifact's own forward converts
    its input to float32 (its contract), which a float16 network then refuses; so the half row
    times the wrapped network (`model.net`) directly."""
    half = copy.deepcopy(getattr(model, "net", model)).half()
    return lambda x: half(x.half())


def _onnxruntime_variant(model, workload, device: torch.device) -> Variant | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    import tempfile
    from pathlib import Path

    from ..export import save_onnx
    provider = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}.get(device.type)
    if provider not in ort.get_available_providers():
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = save_onnx(copy.deepcopy(model.net).cpu(), torch.rand(2, *model.in_shape), Path(folder) / "model.onnx")
        session = ort.InferenceSession(str(path), providers=[provider])
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:   # host arrays in and out, as a user of onnxruntime has
        return torch.from_numpy(session.run(None, {name: x.detach().cpu().numpy()})[0])
    return Variant("onnxruntime", run, workload.inputs)
