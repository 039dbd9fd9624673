"""Pieces every training loop uses: early stopping, losses, loggers."""
from .early_stopping import EarlyStopping
from .loggers import RunLogger
from .losses import build_loss

__all__ = ["EarlyStopping", "RunLogger", "build_loss"]
