"""Fashion-MNIST at full size, from the IDX files of Debian's ``dataset-fashion-mnist``.

The package (``apt-get install -y dataset-fashion-mnist``) installs the 60,000 training and
10,000 test images (28 x 28 grey levels) with their labels as gzipped IDX files under
:data:`DEFAULT_PATH`; nothing is downloaded. :func:`load_fashion_mnist` reads them, checks
each file's magic number and sizes, flattens the images to 784 features, binarizes them
once (the grey level ``g / 255`` is the probability of a 1: the usual *stochastic*
binarization, drawn with a given seed; or a threshold), and splits the training images into
the first 50,000 (train) and the last 10,000 (validation); the 10,000 test images are the
test set. Labels are kept (0 T-shirt/top, 1 trouser, 2 pullover, 3 dress, 4 coat,
5 sandal, 6 shirt, 7 sneaker, 8 bag, 9 ankle boot).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["DEFAULT_PATH", "ImageSplit", "load_fashion_mnist", "read_idx"]

#: Where Debian's ``dataset-fashion-mnist`` puts the files.
DEFAULT_PATH = Path("/usr/share/datasets/fashion-mnist")
_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_INSTALL = "install it with `apt-get install -y dataset-fashion-mnist` or pass path= to a folder holding the four IDX files"
#: IDX magic numbers: two zero bytes, the type (0x08: unsigned byte), the number of dimensions.
_MAGIC = {1: 0x00000801, 3: 0x00000803}


@dataclass
class ImageSplit:
    """Train, validation and test images (``N x D``, values in {0, 1} once binarized) and labels."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor
    val_labels: torch.Tensor
    test_labels: torch.Tensor


def read_idx(path: str | Path, dims: int) -> np.ndarray:
    """The unsigned-byte array of an IDX file (gzipped or not) of ``dims`` dimensions.

    :raises FileNotFoundError: if the file is missing (the message says how to install it).
    :raises ValueError: if it is truncated, corrupted, or not an IDX file of ``dims`` dimensions.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: Fashion-MNIST is not installed there; {_INSTALL}")
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":  # gzip's magic bytes
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise ValueError(f"{path} is not a readable gzip file (truncated or corrupted): {e}; {_INSTALL}") from e
    header = 4 + 4 * dims
    if len(raw) < header:
        raise ValueError(f"{path} is truncated: {len(raw)} bytes, shorter than an IDX header; {_INSTALL}")
    magic = int.from_bytes(raw[:4], "big")
    if magic != _MAGIC[dims]:
        raise ValueError(
            f"{path} has magic number {magic:#010x}, not {_MAGIC[dims]:#010x} (an IDX file of unsigned bytes in "
            f"{dims} dimensions): it is corrupted or another file; {_INSTALL}"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(dims))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise ValueError(
            f"{path} holds {len(raw) - header} values after its header, but its header says {shape} = "
            f"{expected - header}: it is truncated or corrupted; {_INSTALL}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).exists():
            return folder / name
    return folder / (stem + ".gz")


def load_fashion_mnist(
    path: str | Path | None = None,
    *,
    binarize: str | None = "stochastic",
    seed: int = 0,
    threshold: float = 0.5,
    dtype: torch.dtype | None = None,
) -> ImageSplit:
    """Fashion-MNIST's 70,000 images as ``(N, 784)`` tensors, split 50,000 / 10,000 / 10,000.

    :param path: the folder of the four IDX files (default :data:`DEFAULT_PATH`), gzipped or not.
    :param binarize: ``"stochastic"``: each pixel is 1 with probability ``g / 255``, drawn
        once from a generator seeded with ``seed`` (the same seed gives the same images);
        ``"threshold"``: 1 where ``g / 255 > threshold``; ``None``: the grey levels in [0, 1].
    :param seed: the seed of the stochastic binarization.
    :param dtype: of the images (default: torch's default dtype); labels are int64.

    >>> data = load_fashion_mnist()  # doctest: +SKIP
    >>> data.train.shape, data.val.shape, data.test.shape  # doctest: +SKIP
    (torch.Size([50000, 784]), torch.Size([10000, 784]), torch.Size([10000, 784]))
    """
    if binarize not in ("stochastic", "threshold", None):
        raise ValueError(f"binarize must be 'stochastic', 'threshold' or None, got {binarize!r}")
    folder = DEFAULT_PATH if path is None else Path(path)
    arrays = {key: read_idx(_find(folder, stem), 3 if key.endswith("images") else 1) for key, stem in _FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels) or images.shape[1:] != (28, 28):
            raise ValueError(
                f"Fashion-MNIST's {split} files disagree: {images.shape} images, {labels.shape} labels "
                f"(expected 28 x 28 images, one label each); {_INSTALL}"
            )
    dtype = dtype or torch.get_default_dtype()
    grey = torch.from_numpy(np.concatenate([arrays["train_images"], arrays["test_images"]]).reshape(-1, 784))
    probs = grey.to(torch.float64) / 255.0
    if binarize == "stochastic":
        generator = torch.Generator().manual_seed(seed)
        images = (torch.rand(probs.shape, generator=generator, dtype=torch.float64) < probs).to(dtype)
    elif binarize == "threshold":
        images = (probs > threshold).to(dtype)
    else:
        images = probs.to(dtype)
    labels = torch.from_numpy(np.concatenate([arrays["train_labels"], arrays["test_labels"]]).astype(np.int64))
    cuts = (50_000, 60_000)
    return ImageSplit(
        images[: cuts[0]], images[cuts[0] : cuts[1]], images[cuts[1] :],
        labels[: cuts[0]], labels[cuts[0] : cuts[1]], labels[cuts[1] :],
    )
