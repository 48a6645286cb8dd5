"""Input checks shared by the public entry points.

Each check raises ``ValueError`` (or ``TypeError``) with a message that names the
argument and the problem, so that bad input never reaches torch as a shape error.
"""

from __future__ import annotations

import math
import operator

import numpy as np
import torch

from ._tensors import row_chunks

__all__ = ["as_data_tensor", "check_code_noise", "check_count", "check_num_neighbors", "check_positive"]


def _first_entry(data: torch.Tensor, predicate) -> tuple[int, int] | None:
    """``(row, column)`` of the first entry where ``predicate`` holds, checked in row
    chunks so that no ``N x D`` mask is held; ``None`` if there is none."""
    start = 0
    for chunk in row_chunks(data):
        hit = predicate(chunk)
        if hit.any():
            row, col = (int(v) for v in hit.nonzero()[0])
            return start + row, col
        start += len(chunk)
    return None


def as_data_tensor(data, name: str = "data", binary: bool = False) -> torch.Tensor:
    """Return ``data`` as a 2-D floating tensor of finite values (``N x D``).

    Integer data is accepted only when ``binary`` is true (it is then cast to the
    default floating dtype); for a Gaussian likelihood it would be a silent misuse. Data
    that requires grad is detached: a cache is a constant of the data.
    """
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data)  # torch cannot view negative strides (np.flip)
    if not isinstance(data, torch.Tensor):
        try:
            data = torch.as_tensor(data)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"{name} must be a tensor or array of numbers, got {type(data).__name__}") from e
    if data.layout != torch.strided:
        raise ValueError(f"{name} is a sparse tensor ({data.layout}); pass data.to_dense()")
    if data.device.type == "meta":
        raise ValueError(f"{name} is on the meta device and holds no values; pass real data")
    if data.is_complex():
        raise ValueError(f"{name} has complex dtype {data.dtype}; it needs real floating-point values")
    data = data.detach()
    if data.dim() != 2:
        raise ValueError(
            f"{name} must be 2-D (N points x D features), got shape {tuple(data.shape)}; "
            "reshape 1-D data with data.unsqueeze(-1) and flatten images to vectors"
        )
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(data.shape)}")
    if not data.is_floating_point():
        if data.dtype == torch.bool or binary:
            data = data.to(torch.get_default_dtype())
        else:
            raise ValueError(
                f"{name} has integer dtype {data.dtype}; it needs floating-point values (cast with "
                "data.float()), or likelihood='bernoulli' for binary data"
            )
    if data.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name} has dtype {data.dtype}; use float32 or float64 (e.g. data.float())")
    bad = _first_entry(data, lambda chunk: ~torch.isfinite(chunk))
    if bad is not None:
        count = sum(int((~torch.isfinite(c)).sum()) for c in row_chunks(data))
        raise ValueError(
            f"{name} contains {count} NaN or infinite value(s), the first at row {bad[0]}, column {bad[1]}"
        )
    if binary:
        bad = _first_entry(data, lambda chunk: (chunk != 0) & (chunk != 1))
        if bad is not None:
            raise ValueError(
                f"likelihood='bernoulli' needs binary {name} (0 or 1); found {data[bad].item()} "
                f"at row {bad[0]}, column {bad[1]}"
            )
    return data


def check_count(value: int, name: str, minimum: int = 1) -> int:
    """Check that ``value`` is an ``int`` of at least ``minimum`` and return it."""
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)  # ints, numpy integers, 0-d integer tensors
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def check_num_neighbors(num_neighbors: int, num_points: int, name: str = "num_neighbors") -> int:
    """Check ``1 <= num_neighbors <= num_points`` and return it."""
    num_neighbors = check_count(num_neighbors, name)
    if num_neighbors > num_points:
        raise ValueError(f"{name}={num_neighbors} is larger than the number of training points N={num_points}")
    return num_neighbors


def check_positive(value, name: str) -> float:
    """Check that ``value`` is a finite number > 0 and return it as a ``float``."""
    try:
        value = float(value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a positive number, got {value!r}") from e
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def check_code_noise(value, name: str = "code_noise", prior_family: str | None = None) -> float:
    """Check that ``value`` (the code noise ``tau``) is a finite number >= 0, and, given the
    ``prior_family`` that will be fitted, that it can be widened by the noise (not the flow) or,
    for the exemplar prior, that it is positive;
    return it as a ``float``."""
    try:
        value = float(value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a number >= 0, got {value!r}") from e
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    if value and prior_family == "flow":
        raise ValueError(f"{name} widens a 'gaussian', 'gmm' or 'exemplar' prior in closed form, not the flow")
    if not value and prior_family == "exemplar":
        raise ValueError(f"the 'exemplar' prior puts N(z_i, tau^2 I) at each code: {name} must be positive "
                         "(with none it has no density between the codes)")
    return value
