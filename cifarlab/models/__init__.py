"""Model registry. Importing this package registers every model family."""
from . import reference, separable  # noqa: F401  (registration side effects)
from .registry import create_model, list_models, model_builder, parse_model_args, register_model

__all__ = ["create_model", "list_models", "model_builder", "parse_model_args", "register_model"]
