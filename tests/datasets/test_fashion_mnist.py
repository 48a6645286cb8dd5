"""Fashion-MNIST from Debian's dataset-fashion-mnist: shapes, binarization, labels, and
the errors a missing, truncated or corrupted file gets."""

import gzip
import shutil

import pytest
import torch

from pyro_mapa.datasets import load_fashion_mnist
from pyro_mapa.datasets.fashion_mnist import DEFAULT_PATH


@pytest.fixture(scope="module")
def fashion():
    return load_fashion_mnist(seed=0)


def test_shapes_dtype_values_and_labels(fashion):
    assert fashion.train.shape == (50_000, 784) and fashion.val.shape == (10_000, 784)
    assert fashion.test.shape == (10_000, 784)
    assert fashion.train.dtype == torch.get_default_dtype()
    for x in (fashion.train, fashion.val, fashion.test):
        assert ((x == 0) | (x == 1)).all()
    assert fashion.train_labels.shape == (50_000,) and fashion.val_labels.shape == (10_000,)
    assert torch.equal(fashion.test_labels.bincount(), torch.full((10,), 1000))  # the test set is balanced
    assert fashion.train_labels.dtype == torch.int64 and int(fashion.train_labels.max()) == 9


def test_stochastic_binarization_follows_the_grey_levels_and_its_seed(fashion):
    grey = load_fashion_mnist(binarize=None)
    assert grey.train.min() == 0 and grey.train.max() == 1 and not ((grey.train == 0) | (grey.train == 1)).all()
    # each pixel is a Bernoulli draw with p = grey level: the mean over 39 million pixels agrees to 4 standard errors
    p = grey.train.double()
    se = (p * (1 - p)).sum().sqrt() / p.numel()
    assert abs(fashion.train.double().mean() - p.mean()) < 4 * se
    assert torch.equal(load_fashion_mnist(seed=0).test, fashion.test)  # the same seed: the same images
    assert not torch.equal(load_fashion_mnist(seed=1).test, fashion.test)
    assert torch.equal(fashion.train_labels, grey.train_labels)


def test_threshold_binarization():
    grey = load_fashion_mnist(binarize=None)
    assert torch.equal(load_fashion_mnist(binarize="threshold", threshold=0.3).val, (grey.val > 0.3).float())
    with pytest.raises(ValueError, match="binarize must be"):
        load_fashion_mnist(binarize="otsu")


def _copy_with(tmp_path, name, content):
    """The four files in tmp_path, the real ones linked and ``name`` replaced by ``content``."""
    for source in DEFAULT_PATH.glob("*-ubyte.gz"):
        if source.name != name:
            (tmp_path / source.name).symlink_to(source)
    (tmp_path / name).write_bytes(content)
    return tmp_path


def test_a_missing_package_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path)


def test_a_truncated_gzip_file_is_named(tmp_path):
    raw = (DEFAULT_PATH / "t10k-labels-idx1-ubyte.gz").read_bytes()
    folder = _copy_with(tmp_path, "t10k-labels-idx1-ubyte.gz", raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz is not a readable gzip file.*dataset-fashion-mnist"):
        load_fashion_mnist(folder)


def test_a_truncated_idx_file_is_named(tmp_path):
    raw = gzip.decompress((DEFAULT_PATH / "t10k-labels-idx1-ubyte.gz").read_bytes())
    folder = _copy_with(tmp_path, "t10k-labels-idx1-ubyte.gz", gzip.compress(raw[:-10]))
    with pytest.raises(ValueError, match=r"holds 9990 values after its header, but its header says \(10000,\)"):
        load_fashion_mnist(folder)


def test_a_corrupted_magic_number_is_named(tmp_path):
    raw = bytearray(gzip.decompress((DEFAULT_PATH / "train-labels-idx1-ubyte.gz").read_bytes()))
    raw[3] = 0x03  # claims three dimensions
    folder = _copy_with(tmp_path, "train-labels-idx1-ubyte.gz", gzip.compress(bytes(raw)))
    with pytest.raises(ValueError, match="magic number 0x00000803, not 0x00000801"):
        load_fashion_mnist(folder)


def test_uncompressed_files_load_too(tmp_path):
    for source in DEFAULT_PATH.glob("*-ubyte.gz"):
        with gzip.open(source) as f, open(tmp_path / source.name[:-3], "wb") as out:
            shutil.copyfileobj(f, out)
    assert torch.equal(load_fashion_mnist(tmp_path, binarize=None).val, load_fashion_mnist(binarize=None).val)
