"""Training a user's empiricalized model end to end, on one process or data-parallel on
``torch.distributed``, and the file it is saved in (docs/math.md, section 9)."""

from .data_parallel import (
    CODE_GRADIENTS,
    DataParallelStep,
    minibatches,
    process_group_size,
)
from .pipeline import train_mapa
from .saved import TrainedModel

__all__ = ["CODE_GRADIENTS", "DataParallelStep", "TrainedModel", "minibatches", "process_group_size", "train_mapa"]
