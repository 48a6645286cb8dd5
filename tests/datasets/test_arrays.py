"""A user's own array from .npy, .npz and .csv, and the errors bad files get."""

import numpy as np
import pytest
import torch

from pyro_mapa.datasets import load_array


@pytest.fixture
def array():
    return np.random.default_rng(0).random((7, 3))


def test_npy_npz_and_csv_give_the_same_tensor(tmp_path, array):
    np.save(tmp_path / "x.npy", array)
    np.savez(tmp_path / "x.npz", data=array)
    np.savetxt(tmp_path / "x.csv", array, delimiter=",", header="a,b,c", comments="")
    np.savetxt(tmp_path / "plain.csv", array, delimiter=",")
    expected = torch.as_tensor(array, dtype=torch.get_default_dtype())
    for name in ("x.npy", "x.npz", "x.csv", "plain.csv"):
        assert torch.allclose(load_array(tmp_path / name), expected), name
    assert load_array(tmp_path / "x.npy", dtype=torch.float64).dtype == torch.float64


def test_an_npz_with_several_arrays_needs_a_key(tmp_path, array):
    np.savez(tmp_path / "x.npz", train=array, labels=np.arange(7))
    with pytest.raises(ValueError, match=r"holds the arrays \['train', 'labels'\]; pass key="):
        load_array(tmp_path / "x.npz")
    assert load_array(tmp_path / "x.npz", key="train").shape == (7, 3)
    with pytest.raises(ValueError, match="has no array 'test'"):
        load_array(tmp_path / "x.npz", key="test")


@pytest.mark.parametrize(
    "name, write, message",
    [
        ("x.txt", lambda p: p.write_text("1,2"), "unknown extension '.txt'"),
        ("x.npy", lambda p: np.save(p, np.zeros(5)), "must be 2-D"),
        ("x.npy", lambda p: np.save(p, np.array([[1.0, np.nan]])), "NaN or infinite value.*row 0, column 1"),
        ("x.npy", lambda p: np.save(p, np.array([["a", "b"]])), "holds <U1 values; it needs numbers"),
        ("x.npy", lambda p: p.write_bytes(b"\x93NUMPY garbage"), "is not a readable .npy file"),
        ("x.csv", lambda p: p.write_text("1,2\n3,x\n"), "x.csv is not a readable .csv file"),
    ],
)
def test_bad_files_are_named(tmp_path, name, write, message):
    write(tmp_path / name)
    with pytest.raises(ValueError, match=message):
        load_array(tmp_path / name)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_array(tmp_path / "none.npy")
