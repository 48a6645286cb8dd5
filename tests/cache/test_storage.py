"""Save, load, and the loads a user must be refused."""

import os

import pytest
import torch

from pyro_mapa import MAPAPosterior


@pytest.fixture
def fitted(float64):
    data = torch.randn(50, 3)
    return data, MAPAPosterior.fit(data, scale=0.3, num_cached=7)


def test_round_trip(tmp_path, fitted):
    data, posterior = fitted
    path = tmp_path / "cache.pt"
    posterior.save(path)
    loaded = MAPAPosterior.load(path, data)
    for a, b in zip(loaded.table, posterior.table):
        assert torch.equal(a, b)
    assert loaded.temperature == posterior.temperature
    assert loaded.fingerprint == posterior.fingerprint
    assert torch.equal(loaded.query(data[:3]).index, posterior.table.index[:3])


def test_float32_copy_of_the_same_values_loads(tmp_path):
    data = torch.randn(30, 2)  # float32 values
    MAPAPosterior.fit(data, scale=0.3, num_cached=4).save(tmp_path / "c.pt")
    loaded = MAPAPosterior.load(tmp_path / "c.pt", data.double())
    assert loaded.table.log_prob.dtype == torch.float64


def test_custom_distance_round_trip(tmp_path, float64):
    def l1(a, b):
        return torch.cdist(a, b, p=1)

    data = torch.randn(30, 2)
    posterior = MAPAPosterior.fit(data, likelihood="custom", distance=l1, temperature=0.2, num_cached=4)
    posterior.save(tmp_path / "c.pt")
    with pytest.raises(ValueError, match="custom distance"):
        MAPAPosterior.load(tmp_path / "c.pt", data)
    loaded = MAPAPosterior.load(tmp_path / "c.pt", data, distance=l1)
    assert torch.equal(loaded.query(data).index, posterior.table.index)

    def l2(a, b):
        return torch.cdist(a, b)

    with pytest.raises(ValueError, match="computes other values than the distance given"):
        MAPAPosterior.load(tmp_path / "c.pt", data, distance=l2)


@pytest.mark.parametrize(
    "other",
    [
        lambda d: d + 1e-9,  # nearly the same values
        lambda d: d[:-1],  # one point fewer
        lambda d: d.flip(0),  # other order
    ],
)
def test_refuses_other_data(tmp_path, fitted, other):
    data, posterior = fitted
    posterior.save(tmp_path / "c.pt")
    with pytest.raises(ValueError, match="built from other data"):
        MAPAPosterior.load(tmp_path / "c.pt", other(data))


def test_refuses_truncated_file(tmp_path, fitted):
    data, posterior = fitted
    path = tmp_path / "c.pt"
    posterior.save(path)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(ValueError, match="not a readable MAPA cache"):
        MAPAPosterior.load(path, data)


def test_refuses_corrupted_file(tmp_path, fitted):
    data, posterior = fitted
    path = tmp_path / "c.pt"
    posterior.save(path)
    raw = bytearray(path.read_bytes())
    # flip a byte inside the log-probability table (a stretch of float64 payload)
    payload = bytes(posterior.table.log_prob.numpy().tobytes()[:16])
    at = raw.find(payload)
    assert at >= 0
    raw[at + 3] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupted|not a readable"):
        MAPAPosterior.load(path, data)


def test_refuses_another_file(tmp_path, fitted):
    data, _ = fitted
    path = tmp_path / "c.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="not a readable MAPA cache"):
        MAPAPosterior.load(path, data)


def test_missing_file_is_file_not_found(tmp_path, fitted):
    data, _ = fitted
    with pytest.raises(FileNotFoundError):
        MAPAPosterior.load(tmp_path / "nope.pt", data)


def test_failed_save_keeps_the_old_file(tmp_path, fitted, monkeypatch):
    data, posterior = fitted
    path = tmp_path / "c.pt"
    posterior.save(path)
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        posterior.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.pt"]  # no temporary file left behind


def test_a_cache_of_format_1_is_read_as_before():
    """A file written by pyro-mapa 0.1's format 1 (K_c stored as "num_neighbors"; data below),
    committed as it was written: it loads for its data, with its tables, and refuses other data."""
    data = torch.linspace(0, 1, 24, dtype=torch.float64).reshape(12, 2) ** 2
    path = os.path.join(os.path.dirname(__file__), "data", "cache-format-1.pt")
    loaded = MAPAPosterior.load(path, data)
    refit = MAPAPosterior.fit(data, likelihood="normal", scale=0.1, num_cached=4)
    assert loaded.num_cached == 4
    for a, b in zip(loaded.table, refit.table):
        assert torch.allclose(a, b) if a.is_floating_point() else torch.equal(a, b)
    with pytest.raises(ValueError, match="built from other data"):
        MAPAPosterior.load(path, data + 1e-3)


def test_a_loaded_cache_saves_in_the_current_format_and_loads_again(tmp_path):
    data = torch.linspace(0, 1, 24, dtype=torch.float64).reshape(12, 2) ** 2
    old = MAPAPosterior.load(os.path.join(os.path.dirname(__file__), "data", "cache-format-1.pt"), data)
    old.save(tmp_path / "new.pt")
    assert torch.load(tmp_path / "new.pt", weights_only=True)["format"] == "pyro-mapa-cache/2"
    assert torch.equal(MAPAPosterior.load(tmp_path / "new.pt", data).table.index, old.table.index)


def test_other_data_is_named_before_a_missing_custom_distance(tmp_path, float64):
    data = torch.randn(30, 2)
    MAPAPosterior.fit(data, likelihood="custom", distance=lambda a, b: torch.cdist(a, b), temperature=0.2,
                      num_cached=4).save(tmp_path / "c.pt")
    with pytest.raises(ValueError, match="built from other data"):
        MAPAPosterior.load(tmp_path / "c.pt", data + 1.0)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t["index"].__setitem__((0, 1), 999), r"indices outside \[0, 50\)"),
        (lambda t: t["log_prob"].__setitem__((3, 0), 5.0), "do not sum to 1"),
        (lambda t: t.__setitem__("log_tail", t["log_tail"][:-1]), "table shapes"),
    ],
)
def test_a_crafted_file_with_a_recomputed_checksum_is_refused(tmp_path, fitted, edit, message):
    """Issue 12: tables edited and their checksum recomputed loaded, and sample() returned index 999."""
    from pyro_mapa._files import _tensor_digest

    data, posterior = fitted
    posterior.save(tmp_path / "c.pt")
    payload = torch.load(tmp_path / "c.pt", weights_only=True)
    edit(payload["tensors"])
    payload["checksum"] = _tensor_digest(payload["tensors"], payload["fingerprint"])
    torch.save(payload, tmp_path / "c.pt")
    with pytest.raises(ValueError, match=message):
        MAPAPosterior.load(tmp_path / "c.pt", data)


def test_a_custom_distance_is_known_by_what_it_computes(tmp_path, float64):
    """Issue 12: two lambdas share the name '<lambda>'; the cache of one loaded with the other."""
    data = torch.randn(30, 2)
    MAPAPosterior.fit(data, likelihood="custom", distance=lambda a, b: torch.cdist(a, b, p=1), temperature=0.2,
                      num_cached=4).save(tmp_path / "c.pt")
    with pytest.raises(ValueError, match="computes other values"):
        MAPAPosterior.load(tmp_path / "c.pt", data, distance=lambda a, b: torch.cdist(a, b) ** 4)

    def renamed_l1(a, b):  # the same values under another name: the same cache
        return torch.cdist(a, b, p=1)

    assert MAPAPosterior.load(tmp_path / "c.pt", data, distance=renamed_l1).num_cached == 4
