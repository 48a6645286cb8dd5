"""Saving and loading a cache.

A saved cache holds the tables (not the data), the kernel's settings, a SHA-256
fingerprint of the data it was built from together with those settings, and a checksum
of the tables tied to that fingerprint (:mod:`pyro_mapa._files`). A load recomputes the
fingerprint from the data it is given, so a cache can never be paired with other data or
settings.
"""

from __future__ import annotations

import os

import torch

from .._files import fingerprint, read_checked_file, write_checked_file

__all__ = ["FORMAT", "fingerprint", "read_cache_file", "write_cache_file"]

#: The current format. Format 1 named ``K_c`` ``num_neighbors`` in its settings; it is read as before.
FORMAT = "pyro-mapa-cache/2"
_READABLE = (FORMAT, "pyro-mapa-cache/1")


def write_cache_file(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], settings: dict, data_fingerprint: str, num_points: int
) -> None:
    """Write a cache to ``path`` atomically: an existing file is replaced only once the new
    one is completely written (and synced)."""
    write_checked_file(path, FORMAT, tensors, data_fingerprint, settings=settings, num_points=num_points)


def read_cache_file(path: str | os.PathLike) -> dict:
    """The payload of a cache file (format 2, or 1, read as before), its checksum verified.

    :raises ValueError: if the file is not a complete, intact MAPA cache.
    """
    payload = read_checked_file(path, _READABLE, "MAPA cache", required=("settings", "num_points"))
    if not {"name", "temperature"} <= set(payload["settings"]):
        raise ValueError(f"{path} is not a readable MAPA cache: its settings lack the kernel's name or temperature")
    return payload
