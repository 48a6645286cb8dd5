"""Data sets: synthetic ones with ground truth, and real ones that install offline."""

from .digits import load_digits
from .synthetic import SYNTHETIC_DATASETS, SyntheticData, load_synthetic

__all__ = ["SYNTHETIC_DATASETS", "SyntheticData", "load_digits", "load_synthetic"]
