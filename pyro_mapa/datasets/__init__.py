"""Data sets: synthetic ones with ground truth, real ones that install offline
(scikit-learn's digits, Debian's Fashion-MNIST), and a user's own arrays."""

from .arrays import load_array
from .digits import load_digits
from .fashion_mnist import ImageSplit, load_fashion_mnist
from .synthetic import SYNTHETIC_DATASETS, SyntheticData, load_synthetic

__all__ = [
    "SYNTHETIC_DATASETS",
    "ImageSplit",
    "SyntheticData",
    "load_array",
    "load_digits",
    "load_fashion_mnist",
    "load_synthetic",
]
