"""Training a user's empiricalized model end to end: data-parallel steps on
``torch.distributed`` (docs/math.md, section 9)."""

from .data_parallel import CODE_GRADIENTS, DataParallelStep, minibatches, process_group_size

__all__ = ["CODE_GRADIENTS", "DataParallelStep", "minibatches", "process_group_size"]
