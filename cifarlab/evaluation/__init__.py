"""Evaluation: fidelity metrics for transform models."""
from .metrics import fidelity, predict

__all__ = ["fidelity", "predict"]
