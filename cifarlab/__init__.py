"""cifarlab: distill image-transform pipelines into fast networks, and a CIFAR-10 lab.

    import cifarlab
    net = cifarlab.load("runs/my-run")        # torch.nn.Module, eval mode
    out = net(images)                         # uint8, or float (N, 3, 32, 32) in [0, 1]:
                                              # the pipeline's output, or class logits

`cifarlab.load` reads `model.pt` with `weights_only=True`: safe for files from anyone.
"""
from __future__ import annotations

__version__ = "0.1.0"


def model_file(run):
    """`run` as the path of its model.pt: a run folder, or the model.pt file itself."""
    from pathlib import Path

    from .errors import CifarlabError

    path = Path(run)
    if path.is_dir():
        return path / "model.pt"
    if path.is_file():
        if path.suffix == ".pt":
            return path
        raise CifarlabError(f"{str(path)!r} is a file, not a run folder: expected a run folder written by "
                            f"'cifarlab transform train' or 'cifarlab classify train' (or its model.pt)")
    raise CifarlabError(f"run folder {str(path)!r} does not exist")


def load(run):
    """The trained network of a run folder (transform or classify), in eval mode."""
    from .checkpoints import read_checkpoint

    ckpt = read_checkpoint(model_file(run))
    if ckpt["format"] == "cifarlab-classify/1":
        from .classify.artifact import build_from_checkpoint
    else:
        from .transform.artifact import build_from_checkpoint
    return build_from_checkpoint(ckpt)
