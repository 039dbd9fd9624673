"""Train a CIFAR-10 classifier into a run folder; the loop is deliberately plain.

    cifarlab classify train --data ../shared/data/cifar10-train-subset --recipe fast --time-budget 60
    torchrun --standalone --nproc_per_node=2 -m cifarlab classify train --data ... --out runs/ddp

A run folder holds config.json, model.pt (best validation accuracy), last.pt (for --resume),
model.pt2 (torch.export, loadable without cifarlab), metrics.json, curves.png, confusion.png,
report.md and tensorboard/. Ctrl-C saves and finishes the run; `--resume RUN_DIR` continues
it. A NaN loss stops the run with the best checkpoint intact.
"""
from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import torch
import torchvision
from tqdm import tqdm

from ..devices import resolve_device
from ..errors import CifarlabError
from ..io import torch_save, write_json
from ..runs import RunFolder, config_to_resume
from ..training import RunLogger
from . import ddp
from .artifact import build_classifier, checkpoint, read_checkpoint
from ..checkpoints import read_training_state, save_checkpoint
from .config import ClassifyConfig
from .data import prepare_data
from .report import finish_run
from .trainer import Trainer, init_from_data


LAST_STATE_KEYS = ("model", "optimizer", "stopper", "history", "epoch", "step", "elapsed", "best_accuracy",
                   "order_generator", "augment_generator")


def default_run_dir(recipe: str) -> Path:
    return Path("runs") / f"{datetime.now():%Y%m%d-%H%M%S}-classify-{recipe}"


def train(config: ClassifyConfig | None, out: str | None = None, resume: str | None = None,
          quiet: bool = False) -> Path:
    """Train (or resume) a run; returns its folder. Works alike in one process and under torchrun.

    With `resume` the run continues with its saved config; `config` may be None, or the saved
    config with new RESUMABLE settings (limits, device, threads)."""
    if resume:
        config = config_to_resume(resume, ClassifyConfig, config)
    elif config is None:
        raise CifarlabError("train() needs a ClassifyConfig (or resume=RUN_DIR)")
    run_dir = Path(resume) if resume else Path(out) if out else default_run_dir(config.recipe)
    config.validate()
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    dist, device = ddp.setup(resolve_device(config.device))
    quiet = quiet or not dist.is_main
    folder = None
    try:
        if dist.is_main:  # rank 0 alone holds and writes the run folder
            folder = RunFolder.open(run_dir, "resume") if resume else RunFolder.create(run_dir)
        with ddp.interrupts_as_flag(dist):
            return _train(config, run_dir, bool(resume), dist, device, quiet)
    except BaseException:
        if folder is not None and not resume and not (run_dir / "model.pt").exists():
            folder.abandon()  # nothing worth keeping: the same --out can be used again
        raise
    finally:
        if folder is not None:
            folder.release()
        ddp.cleanup(dist)


def _train(config, run_dir, resuming, dist, device, quiet) -> Path:
    data = prepare_data(config.data, config.data_root, config.val_fraction, config.seed)
    train_set, val_set = data.split("train"), data.split("val")
    model = build_classifier(config.model, config.model_args, data.classes, config.pretrained, config.tta)
    init_from_data(model, train_set.images)
    model.to(device)
    trainer = Trainer(config, model, train_set, device, dist)
    if resuming:
        state = read_training_state(run_dir / "last.pt", LAST_STATE_KEYS, "cifarlab classify train")
        best = read_checkpoint(run_dir / "model.pt")["state_dict"] if (run_dir / "model.pt").exists() else None
        try:
            trainer.load_state_dict(state, best)
        except Exception as e:
            raise CifarlabError(f"cannot resume {str(run_dir)!r}: last.pt is damaged or belongs to another "
                                f"model ({type(e).__name__})") from None

    meta = {"torch": torch.__version__, "torchvision": torchvision.__version__, "processes": dist.world,
            "device": str(device)}
    logger = None
    if dist.is_main:
        write_json(run_dir / "config.json", config.to_dict())
        logger = RunLogger(config.logger, run_dir, config.to_dict() | meta)
    if not quiet:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"cifarlab classify: recipe {config.recipe}, {config.model} ({n_params:,} parameters) on "
              f"{data.pool.name} ({len(train_set)} train / {len(val_set)} validation images, {len(data.classes)} "
              f"classes), device {device}" + (f" x {dist.world} processes" if dist.enabled else "")
              + f"; {trainer.limits.describe()}", file=sys.stderr)

    def save_state() -> None:
        if dist.is_main:
            torch_save(trainer.state_dict(), run_dir / "last.pt")

    stop_reason = "epochs"
    try:
        while trainer.limits.epochs_left(trainer.epoch) and not trainer.out_of_time:
            bar = tqdm(total=trainer.steps_per_epoch, desc=f"epoch {trainer.epoch + 1}/{config.epochs or '-'}",
                       leave=False, disable=quiet or None, unit="batch", file=sys.stderr)
            row = trainer.train_epoch(bar)
            bar.close()
            row.update(trainer.validate(val_set))
            if dist.is_main:
                if row["improved"]:
                    save_checkpoint(run_dir / "model.pt", checkpoint(
                        model, config.model, config.model_args, config.to_dict(), epoch=row["epoch"],
                        val_accuracy=row["val_accuracy"]))
                save_state()
                logger.scalars({"loss/train": row["train_loss"], "loss/val": row["val_loss"],
                                "accuracy/train": row["train_accuracy"], "accuracy/val": row["val_accuracy"],
                                "lr": row["lr"], "epoch_seconds": row["epoch_seconds"]}, row["epoch"])
            if not quiet:
                mark = "*" if row["improved"] else " "
                print(f"epoch {row['epoch']:3d}  train loss {row['train_loss']:.3f} acc {row['train_accuracy']:.1%}  "
                      f"val loss {row['val_loss']:.3f} acc {row['val_accuracy']:.1%}{mark}  lr {row['lr']:.2e}  "
                      f"{row['epoch_seconds']:5.1f}s/epoch  {row['time']:6.1f}s", file=sys.stderr)
            if trainer.stopper.should_stop:
                stop_reason = f"early stopping (no validation improvement for {config.patience} epochs)"
                break
        if trainer.out_of_time:
            stop_reason = "time budget"
    except KeyboardInterrupt:
        save_state()
        stop_reason = "interrupted"
        if not quiet:
            print(f"\ninterrupted: the best model so far is saved; resume with "
                  f"'cifarlab classify train --resume {run_dir}'", file=sys.stderr)
    finally:
        if logger is not None:
            logger.close()

    ddp.barrier(dist)
    if not dist.is_main:
        return run_dir
    if trainer.best_state is None:
        if stop_reason == "interrupted":   # Ctrl-C or SIGTERM stays an interruption: a survey or a
            raise KeyboardInterrupt         # search must stop too, not record a failed run and go on
        raise CifarlabError("training stopped before the first epoch finished: nothing was saved "
                            "(raise --time-budget)")
    model.load_state_dict(trainer.best_state)
    model.to(memory_format=torch.contiguous_format)
    finish_run(run_dir, model, data, config, trainer.history, stop_reason, trainer.elapsed, device, meta, quiet)
    if stop_reason == "interrupted":
        raise KeyboardInterrupt
    return run_dir

