"""The comparison harness: MAPA against VAE, IWAE and Pyro's AutoGuides on one decoder,
one split and one budget of decoder passes (docs/math.md, section 8), the demo, and the
``pyro-mapa`` command. It stands on the library; nothing in the library imports it."""

from .compare import run_comparison
from .methods import METHODS, Method, TrainingSetup, build_method, parse_method
from .report import (
    PairedDifference,
    paired_difference,
    paired_table,
    paired_tables,
    plot_curves,
    summary_table,
)
from .split import BINARIZATIONS, Split, load_split
from .training import RunResult, restore_params, snapshot_params, train_and_score

__all__ = [
    "BINARIZATIONS",
    "METHODS",
    "Method",
    "PairedDifference",
    "RunResult",
    "Split",
    "TrainingSetup",
    "build_method",
    "load_split",
    "paired_difference",
    "paired_table",
    "paired_tables",
    "parse_method",
    "plot_curves",
    "restore_params",
    "run_comparison",
    "snapshot_params",
    "summary_table",
    "train_and_score",
]
