"""Data sources (CIFAR-10, folders, the embedded sample) and splits."""
from .sources import ImageSet, fit_to_size, load_folder, load_images, sample_images, validation_split

__all__ = ["ImageSet", "fit_to_size", "load_folder", "load_images", "sample_images", "validation_split"]
