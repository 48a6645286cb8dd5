"""A run's saved state: at each checkpoint while it trains, and its trained half before its
final score, so that a run that outlasts a working session resumes where it stopped instead of
training again.

A run of :func:`~pyro_mapa.experiments.train_and_score` trains with checkpoints, keeps the
parameters of the best-validation one, then scores them on the test points; at full size the
two halves can each take an hour or more (Exemplar VAE on Fashion-MNIST; a VAE at the published
54 million passes trains for two hours). Two stages, one file:

* **training** (written after each checkpoint but the last): what the rest of the training
  needs to go on as if never stopped: the current parameters (Pyro's param store,
  unconstrained), the optimiser's state (Pyro's :meth:`~pyro.optim.PyroOptim.get_state`, each
  parameter's Adam moments and step), the pass counters and the next checkpoint
  (:class:`TrainingProgress`), the best checkpoint so far and the result so far (curve,
  timings);
* **trained** (written after the last checkpoint): the best checkpoint's parameters and the
  result, all the score needs.

Both hold torch's generator state at the moment of writing, so that a resumed run draws what
an uninterrupted one draws (the run's networks live on the CPU, whose generator this is; every
draw of training, of its batches and of the checkpoints' scores comes from it). A file is written
atomically with a fingerprint of the training, validation and test points and of the run's
settings (the split's description among them: its size, likelihood, latent dimension and
width) and a checksum (:mod:`pyro_mapa._files`), so that a file from another run, other data or
a damaged copy is refused by name, never used. The code is not recorded: a run resumed after a
change of code goes on with the new code.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch

from .._files import fingerprint, read_checked_file, write_checked_file
from .split import Split

__all__ = ["FORMAT", "TrainingProgress", "load_trained_run", "save_trained_run"]

FORMAT = "pyro-mapa-trained-run/2"
_CHECKED = {FORMAT: ("result", "settings", "state"),
            "pyro-mapa-trained-run/1": ("result", "settings")}  # /1: the trained stage only, still read


@dataclass
class TrainingProgress:
    """Where an unfinished training stands after a checkpoint: what it needs to go on.

    :param params: the current parameters (:func:`~pyro_mapa.experiments.snapshot_params`).
    :param optimizer: Pyro's optimiser state (:meth:`~pyro.optim.PyroOptim.get_state`).
    :param decoder_passes: the training passes through the decoder so far.
    :param encoder_passes: through the encoder (0 without one).
    :param next_checkpoint: the decoder passes at which the next checkpoint falls.
    """

    params: dict[str, torch.Tensor]
    optimizer: dict
    decoder_passes: int
    encoder_passes: int
    next_checkpoint: float


def _fingerprint(split: Split, settings: dict, file_format: str = FORMAT) -> str:
    """Of the training points, tied to the validation and test points (the curve and the best
    checkpoint were chosen on them), to the settings and to the file's format."""
    held_out = {"val": fingerprint(split.val, {}), "test": fingerprint(split.test, {})}
    return fingerprint(split.train, {"file": file_format, **held_out, **settings})


def _flat_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Pyro's optimiser state as flat tensors (so that the file's checksum covers them) and
    the rest (each parameter's ``param_groups``: plain values)."""
    tensors, groups = {}, {}
    for name, state_dict in state.items():
        for index, entries in state_dict["state"].items():
            tensors.update({f"optim:{name}:{index}:{key}": value for key, value in entries.items()})
        groups[name] = state_dict["param_groups"]
    return tensors, groups


def _nested_optimizer(tensors: dict[str, torch.Tensor], groups: dict) -> dict:
    """The inverse of :func:`_flat_optimizer`."""
    state = {name: {"state": {}, "param_groups": name_groups} for name, name_groups in groups.items()}
    for key, value in tensors.items():
        if key.startswith("optim:"):
            name, index, entry = key[len("optim:"):].rsplit(":", 2)
            state[name]["state"].setdefault(int(index), {})[entry] = value
    return state


def save_trained_run(path: str | os.PathLike, split: Split, settings: dict, result,
                     best_state: dict[str, torch.Tensor], training: TrainingProgress | None = None) -> None:
    """Write the best checkpoint's parameters ``best_state``, the :class:`RunResult` so far,
    torch's generator state and, for an unfinished training, its progress ``training`` to
    ``path`` (atomically), tied to ``split``'s data and to ``settings`` (the run's arguments:
    plain values). Without ``training``: the trained stage."""
    tensors = {f"param:{name}": value for name, value in best_state.items()}
    tensors["rng_state"] = torch.get_rng_state()
    state = {"stage": "trained"}
    if training is not None:
        optimizer, groups = _flat_optimizer(training.optimizer)
        tensors.update({f"current:{name}": value for name, value in training.params.items()}, **optimizer)
        state = {"stage": "training", "optimizer_groups": groups,
                 "counters": {"decoder_passes": training.decoder_passes, "encoder_passes": training.encoder_passes,
                              "next_checkpoint": training.next_checkpoint}}
    write_checked_file(path, FORMAT, tensors, _fingerprint(split, settings), checked=_CHECKED[FORMAT],
                       result=asdict(result), settings=settings, state=state)


def load_trained_run(path: str | os.PathLike, split: Split,
                     settings: dict) -> tuple[dict, dict[str, torch.Tensor], TrainingProgress | None]:
    """The result fields, the best checkpoint's parameters and, where the training was not
    finished, its :class:`TrainingProgress` (else ``None``), saved by :func:`save_trained_run`
    for this split and these ``settings``; torch's generator is set to its saved state.

    :raises ValueError: if the file is damaged, or was saved by a run with other settings or
        other data (the message names the settings that differ).
    """
    payload = read_checked_file(path, tuple(_CHECKED), "saved trained run", checked=_CHECKED)
    saved = payload["settings"]
    if saved != settings:
        differ = sorted(k for k in {*settings, *saved} if settings.get(k) != saved.get(k))
        pairs = "; ".join(f"{k}: saved {saved.get(k)!r}, this run {settings.get(k)!r}" for k in differ)
        raise ValueError(f"{path} was saved by another run ({pairs}); remove it to train again")
    if payload["fingerprint"] != _fingerprint(split, settings, payload["format"]):
        raise ValueError(f"{path} was saved by a run on other training, validation or test points; "
                         "remove it to train again")
    tensors = payload["tensors"]
    torch.set_rng_state(tensors["rng_state"])
    best_state = {name[len("param:"):]: value for name, value in tensors.items() if name.startswith("param:")}
    state = payload["state"] if payload["format"] == FORMAT else {"stage": "trained"}  # /1: its checksum has no state
    if state["stage"] == "trained":
        return payload["result"], best_state, None
    training = TrainingProgress(
        params={name[len("current:"):]: value for name, value in tensors.items() if name.startswith("current:")},
        optimizer=_nested_optimizer(tensors, state["optimizer_groups"]), **state["counters"])
    return payload["result"], best_state, training
