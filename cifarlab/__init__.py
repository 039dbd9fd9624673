"""cifarlab: distill image-transform pipelines into fast networks, and a CIFAR-10 lab.

    import cifarlab
    net = cifarlab.load("runs/my-run")        # torch.nn.Module, eval mode
    out = net(images)                         # float (N, 3, 32, 32) in [0, 1] (or uint8):
                                              # the pipeline's output, or class logits
"""
from __future__ import annotations

__version__ = "0.1.0"


def load(run_dir):
    """The trained network of a run folder (transform or classify), in eval mode."""
    from pathlib import Path

    from .checkpoints import read_checkpoint
    from .errors import CifarlabError

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CifarlabError(f"run folder {str(run_dir)!r} does not exist")
    ckpt = read_checkpoint(run_dir / "model.pt")
    if ckpt["format"] == "cifarlab-classify/1":
        from .classify.artifact import build_from_checkpoint
    else:
        from .transform.artifact import build_from_checkpoint
    return build_from_checkpoint(ckpt)
