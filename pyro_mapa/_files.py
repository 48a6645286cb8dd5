"""Files that can be neither paired with other data nor half-written: fingerprints of the
data, checksums of the tensors tied to them, atomic writes. The cache
(:mod:`pyro_mapa.cache.storage`) and a trained model (:mod:`pyro_mapa.trainer.saved`) are
saved this way."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

import torch

from ._tensors import row_chunks

__all__ = ["atomic_file", "fingerprint", "read_checked_file", "write_checked_file"]


def fingerprint(data: torch.Tensor, settings: dict) -> str:
    """SHA-256 of the data's values (as float64, so float32 and float64 copies of the
    same numbers agree), its shape, and the settings."""
    digest = hashlib.sha256(repr((tuple(data.shape), sorted(settings.items()))).encode())
    for chunk in row_chunks(data):
        digest.update(chunk.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _tensor_digest(tensors: dict[str, torch.Tensor], data_fingerprint: str, fields: dict | None = None) -> str:
    """SHA-256 of the tensors and the checked ``fields``, tied to the data's fingerprint."""
    digest = hashlib.sha256(data_fingerprint.encode())
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    if fields:
        digest.update(json.dumps(fields, sort_keys=True).encode())
    return digest.hexdigest()


def write_checked_file(path: str | os.PathLike, file_format: str, tensors: dict[str, torch.Tensor],
                       data_fingerprint: str, checked: tuple[str, ...] = (), **fields) -> None:
    """Write ``tensors`` and ``fields`` (plain values: strings, numbers, dicts of them) to
    ``path`` atomically, with the data's fingerprint and a checksum of the tensors and of the
    ``checked`` fields: an existing file is replaced only once the new one is completely
    written (and synced)."""
    path = Path(path)
    tensors = {name: t.detach().cpu() for name, t in tensors.items()}
    checksum = _tensor_digest(tensors, data_fingerprint, {name: fields[name] for name in checked})
    payload = {"format": file_format, "fingerprint": data_fingerprint, "tensors": tensors, "checksum": checksum,
               **fields}
    with atomic_file(path) as f:
        torch.save(payload, f)


def read_checked_file(path: str | os.PathLike, formats: tuple[str, ...], what: str, required: tuple[str, ...] = (),
                      checked: tuple[str, ...] | dict[str, tuple[str, ...]] = ()) -> dict:
    """The payload of a file written by :func:`write_checked_file` in one of ``formats``,
    holding the ``required`` fields, its checksum (of the tensors and the ``checked`` fields,
    or ``checked[format]`` where they differ by format) verified.

    :raises ValueError: if the file is not a complete, intact ``what`` (a truncated or
        corrupted copy, another file, another format).
    :raises FileNotFoundError: if there is no such file.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        tensors, data_fingerprint, checksum = payload["tensors"], payload["fingerprint"], payload["checksum"]
        if payload["format"] not in formats:
            raise ValueError(f"unknown format {payload['format']!r}")
        if isinstance(checked, dict):
            checked = checked[payload["format"]]
        for name in (*required, *checked):
            payload[name]
    except FileNotFoundError:
        raise
    except Exception as e:  # torch raises many types on a damaged zip or pickle
        raise ValueError(f"{path} is not a readable {what} (truncated, corrupted or another file): {e}") from e
    if _tensor_digest(tensors, data_fingerprint, {name: payload[name] for name in checked}) != checksum:
        raise ValueError(f"{path} is corrupted: its contents do not match their checksum")
    return payload


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """A file object whose contents replace ``path`` only once completely written and synced
    (on an error the old file stays, and no temporary is left)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".mapa-", dir=path.parent)  # short: a long name stays valid
    try:
        with os.fdopen(fd, mode) as f:
            yield f
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
