"""Figures and markdown reports."""
from .plots import curves_figure, samples_figure

__all__ = ["curves_figure", "samples_figure"]
