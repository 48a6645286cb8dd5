"""A user's own data: an ``N x D`` array from a ``.npy``, ``.npz`` or ``.csv`` file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .._checks import as_data_tensor

__all__ = ["load_array"]


def load_array(path: str | Path, *, key: str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The ``N x D`` floating tensor stored at ``path``.

    :param path: a ``.npy`` file, a ``.npz`` archive (its only array, or ``key``), or a
        ``.csv`` of numbers (comma-separated, one point a row; a first row that is not
        numeric is taken for a header).
    :param key: the array's name in a ``.npz`` that holds several.
    :param dtype: of the result (default: torch's default dtype).
    :raises ValueError: naming the problem: an unknown extension, an archive without the
        array, text that is not numbers, a shape that is not 2-D, NaN or infinite values.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "x.csv"
    >>> _ = path.write_text("a,b\\n0,1\\n1,1\\n")
    >>> load_array(path)
    tensor([[0., 1.],
            [1., 1.]])
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise ValueError(f"{path}: unknown extension {suffix!r}; use .npy, .npz or .csv")
    try:
        arrays = _READERS[suffix](path)
    except Exception as e:  # numpy raises several types on a damaged file
        raise ValueError(f"{path} is not a readable {suffix} file: {e}") from e
    if key is None and len(arrays) != 1:
        raise ValueError(f"{path} holds the arrays {list(arrays)}; pass key= to choose one")
    if key is not None and key not in arrays:
        raise ValueError(f"{path} has no array {key!r}; it holds {list(arrays)}")
    array = arrays[key] if key is not None else next(iter(arrays.values()))
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{path} holds {array.dtype} values; it needs numbers")
    data = as_data_tensor(torch.as_tensor(array.astype(np.float64)), name=str(path))
    return data.to(dtype or torch.get_default_dtype())


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.keys()}


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    with open(path) as f:
        first = f.readline()
    try:
        [float(v) for v in first.strip().split(",")]
        skip = 0
    except ValueError:
        skip = 1  # a header
    return {"csv": np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2)}


_READERS = {
    ".npy": lambda path: {"npy": np.load(path, allow_pickle=False)},
    ".npz": _read_npz,
    ".csv": _read_csv,
}
