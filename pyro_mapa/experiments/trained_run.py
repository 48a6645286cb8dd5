"""A run's trained half, saved before its final score, so that a run that outlasts a working
session resumes at the score instead of training again.

A run of :func:`~pyro_mapa.experiments.train_and_score` trains with checkpoints, keeps the
parameters of the best-validation one, then scores them on the test points; at full size the
two halves can each take an hour (Exemplar VAE on Fashion-MNIST). The file holds what the
score needs: the best checkpoint's parameters (Pyro's param store, unconstrained), the result
so far (curve, timings), and torch's generator state at the end of training (the score's
draws are then those of an uninterrupted run; the run's networks live on the CPU, whose
generator this is). It is written atomically with a fingerprint of the training, validation
and test points and of the run's settings (the split's description among them: its size,
likelihood, latent dimension and width) and a checksum (:mod:`pyro_mapa._files`), so that a
file from another run, other data or a damaged copy is refused by name, never scored. The code
is not recorded: a run resumed after a change of code scores with the new code.
"""

from __future__ import annotations

import os
from dataclasses import asdict

import torch

from .._files import fingerprint, read_checked_file, write_checked_file
from .split import Split

__all__ = ["FORMAT", "load_trained_run", "save_trained_run"]

FORMAT = "pyro-mapa-trained-run/1"


def _fingerprint(split: Split, settings: dict) -> str:
    """Of the training points, tied to the validation and test points (the curve and the best
    checkpoint were chosen on them) and to the settings."""
    held_out = {"val": fingerprint(split.val, {}), "test": fingerprint(split.test, {})}
    return fingerprint(split.train, {"file": FORMAT, **held_out, **settings})


def save_trained_run(path: str | os.PathLike, split: Split, settings: dict, result,
                     best_state: dict[str, torch.Tensor]) -> None:
    """Write the best checkpoint's parameters ``best_state``, the :class:`RunResult` so far and
    torch's generator state to ``path`` (atomically), tied to ``split``'s data and to ``settings``
    (the run's arguments: plain values)."""
    tensors = {f"param:{name}": value for name, value in best_state.items()}
    tensors["rng_state"] = torch.get_rng_state()
    write_checked_file(path, FORMAT, tensors, _fingerprint(split, settings), checked=("result", "settings"),
                       result=asdict(result), settings=settings)


def load_trained_run(path: str | os.PathLike, split: Split, settings: dict) -> tuple[dict, dict[str, torch.Tensor]]:
    """The result fields and the best checkpoint's parameters saved by :func:`save_trained_run`
    for this split and these ``settings``; torch's generator is set to its saved state.

    :raises ValueError: if the file is damaged, or was saved by a run with other settings or
        other data (the message names the settings that differ).
    """
    payload = read_checked_file(path, (FORMAT,), "saved trained run", checked=("result", "settings"))
    saved = payload["settings"]
    if saved != settings:
        differ = sorted(k for k in {*settings, *saved} if settings.get(k) != saved.get(k))
        pairs = "; ".join(f"{k}: saved {saved.get(k)!r}, this run {settings.get(k)!r}" for k in differ)
        raise ValueError(f"{path} was saved by another run ({pairs}); remove it to train again")
    if payload["fingerprint"] != _fingerprint(split, settings):
        raise ValueError(f"{path} was saved by a run on other training, validation or test points; "
                         "remove it to train again")
    tensors = payload["tensors"]
    torch.set_rng_state(tensors["rng_state"])
    best_state = {name[len("param:"):]: value for name, value in tensors.items() if name.startswith("param:")}
    return payload["result"], best_state
