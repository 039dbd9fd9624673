"""The CIFAR-10 classification lab: recipes, training (one process or torchrun), k-fold search.

    from cifarlab.classify import recipe_config, train
    run_dir = train(recipe_config("fast", data="../shared/data/cifar10-train-subset", time_budget=60))
"""
from ..models import classifiers  # noqa: F401  (registers the classifiers under task "classify")
from .artifact import ImageClassifier, build_from_checkpoint, load_run
from .config import ClassifyConfig
from .recipes import RECIPES, recipe_config
from .train import train

__all__ = ["ClassifyConfig", "ImageClassifier", "RECIPES", "build_from_checkpoint", "load_run", "recipe_config",
           "train"]
