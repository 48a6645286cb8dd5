"""Saving and loading a cache: fingerprints, checksums, atomic writes.

A saved cache holds the tables (not the data), the kernel's settings, a SHA-256
fingerprint of the data it was built from together with those settings, and a checksum
of the tables tied to that fingerprint. A load recomputes the fingerprint from the data it
is given, so a cache can never be paired with other data or settings.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch

from .._tensors import row_chunks

__all__ = ["FORMAT", "fingerprint", "read_cache_file", "write_cache_file"]

#: The current format. Format 1 named ``K_c`` ``num_neighbors`` in its settings; it is read as before.
FORMAT = "pyro-mapa-cache/2"
_READABLE = (FORMAT, "pyro-mapa-cache/1")


def fingerprint(data: torch.Tensor, settings: dict) -> str:
    """SHA-256 of the data's values (as float64, so float32 and float64 copies of the
    same numbers agree), its shape, and the kernel settings."""
    digest = hashlib.sha256(repr((tuple(data.shape), sorted(settings.items()))).encode())
    for chunk in row_chunks(data):
        digest.update(chunk.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _tensor_digest(tensors: dict[str, torch.Tensor], data_fingerprint: str) -> str:
    """SHA-256 of the tables, tied to the data's fingerprint."""
    digest = hashlib.sha256(data_fingerprint.encode())
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def write_cache_file(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], settings: dict, data_fingerprint: str, num_points: int
) -> None:
    """Write a cache to ``path`` atomically: an existing file is replaced only once the new
    one is completely written (and synced)."""
    path = Path(path)
    tensors = {name: t.detach().cpu() for name, t in tensors.items()}
    payload = {
        "format": FORMAT,
        "fingerprint": data_fingerprint,
        "settings": settings,
        "num_points": num_points,
        "tensors": tensors,
        "checksum": _tensor_digest(tensors, data_fingerprint),
    }
    fd, tmp = tempfile.mkstemp(prefix=".mapa-cache-", dir=path.parent)  # short: a long name stays valid
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would differ from a plain open()
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_cache_file(path: str | os.PathLike) -> dict:
    """The payload of a cache file (format 2, or 1, read as before), its checksum verified.

    :raises ValueError: if the file is not a complete, intact MAPA cache.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        tensors, fingerprint_, checksum = payload["tensors"], payload["fingerprint"], payload["checksum"]
        payload["settings"]["name"], payload["settings"]["temperature"]
        if payload["format"] not in _READABLE:
            raise ValueError(f"unknown format {payload['format']!r}")
    except FileNotFoundError:
        raise
    except Exception as e:  # torch raises many types on a damaged zip or pickle
        raise ValueError(f"{path} is not a readable MAPA cache (truncated, corrupted or another file): {e}") from e
    if _tensor_digest(tensors, fingerprint_) != checksum:
        raise ValueError(f"{path} is corrupted: its tables do not match their checksum")
    return payload
