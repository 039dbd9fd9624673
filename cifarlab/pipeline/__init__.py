"""Pipelines: parse ``"resize:28x28,grayscale,hflip,vflip"`` into steps and produce ground truth."""
from .ground_truth import ground_truth
from .pipeline import DEFAULT_PIPELINE, Pipeline
from .steps import STEPS, parse_step, valid_steps

__all__ = ["DEFAULT_PIPELINE", "Pipeline", "STEPS", "ground_truth", "parse_step", "valid_steps"]
