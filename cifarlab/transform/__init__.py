"""The main job: distill an image pipeline into a fast network (train, evaluate, export, apply)."""
from .artifact import ImageTransformNet
from .config import TransformConfig
from .loop import train

__all__ = ["ImageTransformNet", "TransformConfig", "train"]
