"""Run loggers: TensorBoard by default, Weights & Biases when installed and asked, or none."""
from __future__ import annotations

from pathlib import Path

from ..errors import CifarlabError

LOGGERS = ("tensorboard", "wandb", "none")


class RunLogger:
    def __init__(self, kind: str, run_dir: Path, config: dict):
        if kind not in LOGGERS:
            raise CifarlabError(f"unknown logger {kind!r}; valid loggers: {', '.join(LOGGERS)}")
        self.kind, self.tb, self.wandb = kind, None, None
        if kind == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        elif kind == "wandb":
            try:
                import wandb
            except ImportError:
                raise CifarlabError("--logger wandb needs the wandb package: pip install wandb") from None
            self.wandb = wandb.init(project="cifarlab", dir=str(run_dir), config=config,
                                    name=Path(run_dir).name, resume="allow")

    def scalars(self, values: dict, step: int) -> None:
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(values, step=step)

    def images(self, tag: str, grid, step: int) -> None:
        """`grid`: a (3, H, W) float image in [0, 1]."""
        if self.tb is not None:
            self.tb.add_image(tag, grid, step)
        if self.wandb is not None:
            import wandb
            self.wandb.log({tag: wandb.Image(grid.permute(1, 2, 0).numpy())}, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
