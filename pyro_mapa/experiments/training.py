"""One run of the comparison protocol: MAPA against VAE, IWAE and Pyro's AutoGuides (docs/math.md, section 8).

Every method trains the same decoder with the same likelihood (a Gaussian's ``sigma`` fixed) on the same split,
with the same optimiser (Adam, at one given learning rate, or at a rate chosen per method
by validation on a separate tuning seed), for the same budget of decoder passes (counted
by hooks, training only). Per-point codes (the empiricalized model's,
AutoDelta's and AutoNormal's) start at the training points' principal components by
default (:func:`~pyro_mapa.pca_codes`; from codes near 0 the empiricalized model sits on
a plateau). At each of ``num_checkpoints`` checkpoints the method becomes a
continuous-prior model (:meth:`~pyro_mapa.experiments.methods.Method.continuous_prior`:
``N(0, I)`` for the VAE model, :func:`~pyro_mapa.fit_prior` on the codes for the
empiricalized ones) and is scored on validation and test points by one estimator for
all: importance sampling with the proposal ``scorer``
(:class:`~pyro_mapa.experiments.scoring.ModelScorer`: a mixture of Laplace approximations
anchored at the method's own training codes, or an encoder fitted to the model's
posterior after training). The test log-likelihood is that
of the checkpoint with the best validation log-likelihood, estimated with as many samples
as it takes to be stable to 0.01 nats (:func:`~pyro_mapa.evaluation.stable_log_likelihood`).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import SVI
from pyro.optim import Adam

from .._checks import check_count
from .._progress import progress_bar
from ..evaluation import (
    empirical_log_likelihood,
    grid_log_likelihood,
    stable_log_likelihood,
)
from ..evaluation.likelihood import check_sample_range
from ..models import make_decoder
from ..models.counting import PassCounter
from .methods import Method, build_method, parse_method
from .scoring import ModelScorer
from .split import Split
from .trained_run import TrainingProgress, load_trained_run, save_trained_run
from .warmup import KLWarmup

__all__ = ["GRID_POINTS", "RunResult", "restore_params", "snapshot_params", "train_and_score"]

#: Grid points per axis of the quadrature check, by latent dimension.
GRID_POINTS = {1: 20001, 2: 801}


@dataclass
class RunResult:
    """One method, one seed: the scores at the best-validation checkpoint and the curve."""

    method: str
    seed: int
    lr: float
    kl_warmup: int = 0  # decoder passes of KL warm-up (0: none)
    test_ll: float = -math.inf
    test_se: float = 0.0
    best_val_ll: float = -math.inf
    passes_to_best: int = 0
    seconds_to_best: float = 0.0
    total_passes: int = 0
    decoder_per_point_step: float = 0.0
    encoder_per_point_step: float = 0.0
    steps: int = 0
    test_point_se: float = 0.0  # standard error of test_ll over the test points (sd / sqrt(n))
    test_point_ll: list[float] = field(default_factory=list)  # each test point's estimate: methods compared point by point
    test_ess: float | None = None  # median over test points of the importance weights' effective sample size
    test_k_hat: float | None = None  # median over test points of the weights' Pareto k-hat (> 0.7: not trusted)
    test_particles: int = 0  # importance samples per point behind test_ll (stable_log_likelihood)
    test_converged: bool | None = None  # whether test_ll had settled to 0.01 nats before the sample limit
    grid_test_ll: float | None = None  # the same by grid quadrature, for a latent of d <= 2 (a check)
    empirical_test_ll: float | None = None  # the empiricalized model's exact test LL (MAPA, exact)
    refine_steps: int = 0  # steps of each test point's own proposal fit behind the refined_* fields (0: none)
    refined_test_ll: float | None = None  # test_ll again, each point's proposal refined (a tighter bound)
    refined_test_point_ll: list[float] = field(default_factory=list)  # its per-point estimates, paired with test_point_ll
    refined_test_ess: float | None = None  # as test_ess, refined
    refined_test_k_hat: float | None = None  # as test_k_hat, refined
    refine_seconds: float = 0.0  # the refined score (part of score_seconds)
    setup_seconds: float = 0.0  # building the method: the MAPA cache, the guides' set-up
    train_seconds: float = 0.0  # the SVI steps
    checkpoint_seconds: float = 0.0  # scoring the checkpoints
    score_seconds: float = 0.0  # the final test score (and the grid, the exact score)
    curve: list = field(default_factory=list)  # (decoder passes, val LL, test LL or NaN)


def snapshot_params() -> dict[str, torch.Tensor]:
    """A copy of every parameter in Pyro's param store (unconstrained values)."""
    return {name: value.detach().clone() for name, value in pyro.get_param_store().named_parameters()}


def restore_params(state: dict[str, torch.Tensor]) -> None:
    """Write a :func:`snapshot_params` copy back, in place, so that modules and guides
    that hold the store's tensors see it."""
    store = pyro.get_param_store()
    if set(state) != set(store.keys()):
        raise ValueError(
            f"the snapshot holds {sorted(state)[:3]}... but the param store {sorted(store.keys())[:3]}...: it is "
            "another run's, or empty (no checkpoint was scored)"
        )
    with torch.no_grad():
        for name, value in store.named_parameters():
            value.copy_(state[name])


def train_and_score(
    method: str | Method,
    split: Split,
    seed: int,
    budget: int,
    *,
    batch_size: int = 100,
    lr: float = 1e-2,
    code_init: str = "pca",
    num_checkpoints: int = 20,
    eval_particles: int = 100,
    test_particles: int = 2000,
    max_test_particles: int = 32000,
    checkpoint_test: bool = True,
    scorer: str = "laplace",
    scorer_fit_steps: int = 1000,
    kl_warmup: int = 0,
    refine_steps: int = 0,
    progress: bool | None = False,
    inspect: Callable[[torch.nn.Module, dist.Distribution, torch.Tensor], None] | None = None,
    trained_path: str | os.PathLike | None = None,
) -> RunResult:
    """Train ``method`` for ``budget`` decoder passes and score it (see the module docstring).

    At each of ``num_checkpoints`` checkpoints the validation and test log-likelihoods are
    estimated with ``eval_particles`` importance samples per point (the curve); the
    parameters of the checkpoint with the best validation value are kept, and scored on
    the test points once, at the end, by :func:`stable_log_likelihood` from
    ``test_particles`` up to ``max_test_particles`` samples per point, until stable to
    0.01 nats. For a latent of ``d <= 2`` it is also integrated on a grid
    (:func:`~pyro_mapa.evaluation.grid_log_likelihood` over the codes' range plus 4 in every
    direction, ``GRID_POINTS[d]`` points per axis), a check that needs no proposal.

    :param method: a :class:`~pyro_mapa.experiments.methods.Method` or its name (``"mapa-5-10"``).
    :param checkpoint_test: score the test points at every checkpoint too (the curve's third
        column; ``False`` leaves it NaN and saves the time on large sets).
    :param scorer: the importance-sampling proposal, ``"laplace"`` or ``"encoder"``
        (:class:`~pyro_mapa.experiments.scoring.ModelScorer`); an encoder is fitted for
        ``scorer_fit_steps`` Adam steps at each checkpoint and three times that before the
        final score, its passes not counted in the budget.
    :param kl_warmup: for the ELBO-trained encoder methods (VAE, VampPrior, Exemplar VAE), the
        decoder passes over which the latent's terms are warmed up from weight 0 to 1
        (:class:`~pyro_mapa.experiments.warmup.KLWarmup`; 0: none).
    :param refine_steps: with the ``"encoder"`` scorer, score the test points a second time with
        each point's proposal refined from the encoder's by this many steps on its own bound
        (:meth:`~pyro_mapa.evaluation.EncoderProposal.refined`; docs/math.md, section 5), with
        as many samples as the first score took: the ``refined_*`` fields, a tighter bound on the
        same points (0: not scored). The score only, so it is not part of the run's saved
        settings: a saved trained half can be scored again with it.
    :param progress: a progress bar over the training budget (``None``: on a terminal only).
    :param code_init: where per-point codes start, as in
        :func:`~pyro_mapa.experiments.methods.build_method`.
    :param inspect: called once at the end with the best checkpoint's decoder, its
        continuous prior and its training codes, for whoever wants to score it otherwise
        (benchmarks/estimator_stability.py, benchmarks/prior_family.py).
    :param trained_path: a file for the run's state (:mod:`~pyro_mapa.experiments.trained_run`):
        written after each checkpoint while training and, after the last, as the trained half,
        before the final score. Where it exists already (an interrupted run's), the run goes on
        from it: training from its last checkpoint, or, if it was trained, straight to the
        score; either way with the same result an uninterrupted run gives. A file from a run
        with other settings or data is refused by name.
    """
    method = parse_method(method) if isinstance(method, str) else method
    for name, count in [("budget", budget), ("batch_size", batch_size), ("num_checkpoints", num_checkpoints),
                        ("eval_particles", eval_particles)]:
        check_count(count, name)
    check_sample_range(test_particles, max_test_particles, "test_particles", "max_test_particles")
    if kl_warmup < 0:
        raise ValueError(f"kl_warmup must be 0 (none) or a number of decoder passes, got {kl_warmup}")
    if refine_steps < 0 or (refine_steps and scorer != "encoder"):
        raise ValueError(f"refine_steps refines the 'encoder' scorer's proposal per test point (a count of steps, "
                         f"0: none), got {refine_steps} with the {scorer!r} scorer")
    if kl_warmup and not method.warms_up:  # named before any cache is built
        raise ValueError(f"kl_warmup applies to the ELBO-trained encoder methods (vae, vampprior, exemplar), "
                         f"not {method.label}")
    if trained_path is not None and not os.path.isdir(os.path.dirname(os.path.abspath(trained_path))):
        raise ValueError(f"trained_path {str(trained_path)!r}: its folder does not exist (checked before training, "
                         "so that a trained run is not lost to a failed save)")
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    train, likelihood, d = split.train, split.likelihood, split.latent_dim
    decoder = make_decoder(d, train.shape[1], split.hidden, split.layers)
    clock = time.perf_counter()
    setup = build_method(method, split, decoder, code_init)
    result = RunResult(method=method.label, seed=seed, lr=lr, kl_warmup=kl_warmup,
                       setup_seconds=time.perf_counter() - clock)
    score = ModelScorer(scorer, decoder, likelihood, train, d, split.hidden, scorer_fit_steps, 3 * scorer_fit_steps)

    def current_prior() -> tuple[dist.Distribution, torch.Tensor]:
        """The continuous prior of the current parameters, and the training codes."""
        codes = method.train_codes(setup, train)
        return method.continuous_prior(setup, codes, seed), codes

    settings = dict(split=split.describe(), method=method.label, seed=seed, budget=budget, batch_size=batch_size, lr=lr,
                    code_init=code_init,
                    num_checkpoints=num_checkpoints, eval_particles=eval_particles, checkpoint_test=checkpoint_test,
                    scorer=scorer, scorer_fit_steps=scorer_fit_steps, kl_warmup=kl_warmup)
    saved = training = None
    if trained_path is not None and os.path.exists(trained_path):
        saved, best_state, training = load_trained_run(trained_path, split, settings)  # sets torch's generator
        result = RunResult(**saved)  # the saved run's, timings included
        _register_params(setup, train, batch_size)
    if saved is None or training is not None:  # not trained, or stopped during training
        best_state = _train_with_checkpoints(
            setup, decoder, split, result, score, current_prior, budget=budget, batch_size=batch_size, lr=lr,
            num_checkpoints=num_checkpoints, eval_particles=eval_particles, checkpoint_test=checkpoint_test,
            kl_warmup=kl_warmup, progress=progress, resume=None if saved is None else (best_state, training),
            save=None if trained_path is None else partial(save_trained_run, trained_path, split, settings),
        )
        if trained_path is not None:
            save_trained_run(trained_path, split, settings, result, best_state)
    restore_params(best_state)
    clock = time.perf_counter()
    with torch.no_grad():  # the best-validation checkpoint, scored once, until stable
        prior, codes = current_prior()
        with torch.random.fork_rng():  # as at the checkpoints: the scorer's draws are its own
            score.update(prior, codes, final=True)
        with warnings.catch_warnings():  # a poor k-hat is reported in the result and the table instead
            warnings.simplefilter("ignore", UserWarning)
            final, result.test_particles, result.test_converged = stable_log_likelihood(
                lambda p: score(split.test, p, k_hat=True), test_particles, max_test_particles
            )
        result.test_ll = final.value.mean().item()
        result.test_se = (final.stderr.square().mean() / len(split.test)).sqrt().item()
        result.test_point_se = (final.value.std() / len(split.test) ** 0.5).item() if len(split.test) > 1 else 0.0
        result.test_point_ll = final.value.tolist()
        result.test_ess, result.test_k_hat = final.ess.median().item(), final.k_hat.median().item()
        if refine_steps:
            refine_clock = time.perf_counter()
            with warnings.catch_warnings():  # a poor k-hat is a field (refined() turns its own gradients on)
                warnings.simplefilter("ignore", UserWarning)
                refined = score(split.test, result.test_particles, k_hat=True, refine_steps=refine_steps)
            result.refine_steps, result.refined_test_ll = refine_steps, refined.value.mean().item()
            result.refined_test_point_ll = refined.value.tolist()
            result.refined_test_ess, result.refined_test_k_hat = refined.ess.median().item(), refined.k_hat.median().item()
            result.refine_seconds = time.perf_counter() - refine_clock
        if method.empirical:
            result.empirical_test_ll = empirical_log_likelihood(decoder, codes, split.test, likelihood).mean().item()
        if d <= 2:
            low, high = codes.min().item() - 4.0, codes.max().item() + 4.0
            grid = grid_log_likelihood(decoder, prior, likelihood, split.test, low, high, GRID_POINTS[d])
            result.grid_test_ll = grid.mean().item()
        if inspect is not None:
            inspect(decoder, prior, codes)
    result.score_seconds = time.perf_counter() - clock
    return result


def _register_params(setup, train: torch.Tensor, batch_size: int) -> None:
    """Evaluate the loss once on a batch, so that every module and param the model and guide
    declare is in Pyro's param store, as after a first training step (``pyro.module`` registers
    a network at its first call); torch's generator is left as it was."""
    idx = torch.arange(min(batch_size, len(train)))
    with torch.no_grad(), torch.random.fork_rng():
        setup.loss.loss(setup.model, setup.guide, train[idx], idx)


def _train_with_checkpoints(
    setup, decoder: torch.nn.Module, split: Split, result: RunResult, score: ModelScorer,
    current_prior: Callable[[], tuple[dist.Distribution, torch.Tensor]], *, budget: int, batch_size: int, lr: float,
    num_checkpoints: int, eval_particles: int, checkpoint_test: bool, kl_warmup: int, progress: bool | None,
    resume: tuple[dict[str, torch.Tensor], TrainingProgress] | None = None,
    save: Callable[[RunResult, dict[str, torch.Tensor], TrainingProgress], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Train ``setup`` (around ``decoder``) for ``budget`` decoder passes as :func:`train_and_score`
    says, scoring its checkpoints with ``score``; fills ``result``'s curve, steps and timings and
    returns the best-validation checkpoint's parameters (:func:`snapshot_params`).

    :param resume: the best checkpoint so far and the progress of a training stopped after a
        checkpoint (``result`` then holds its curve and steps, torch's generator its state
        then): training goes on from there.
    :param save: called after every checkpoint but the last with the result so far, the best
        checkpoint's parameters and the progress (the run's state file)."""
    model, guide, loss, encoder, batches = setup
    warmup = None
    if kl_warmup:
        warmup = KLWarmup(kl_warmup)
        model, guide = warmup(model), warmup(guide)
    decoder_passes = PassCounter(decoder)  # attached after every guide's set-up: only training passes count
    encoder_passes = PassCounter(encoder) if encoder is not None else None
    num_points = len(split.train)
    svi = SVI(model, guide, Adam({"lr": lr}), loss=loss)
    best_state, next_checkpoint, elapsed = {}, budget / num_checkpoints, 0.0
    if resume is not None:
        best_state, training = resume
        restore_params(training.params)
        svi.optim.set_state(training.optimizer)  # Pyro's: consumed as each parameter's Adam is made
        decoder_passes.count, next_checkpoint, elapsed = training.decoder_passes, training.next_checkpoint, result.train_seconds
        if encoder_passes is not None:
            encoder_passes.count = training.encoder_passes
    bar = progress_bar(total=budget, progress=progress, desc=f"{result.method} seed {result.seed}", unit="pass", leave=False)
    bar.update(min(decoder_passes.count, budget))
    while decoder_passes.count < budget:
        if batches is None:
            idx, weights = torch.randint(0, num_points, (batch_size,)), None
        else:  # neighbourhoods, each point's terms weighted so that the gradient stays unbiased
            idx, weights = batches.sample(batch_size)
        if warmup is not None:
            warmup.set_progress(decoder_passes.count)
        start = time.perf_counter()
        with poutine.scale(scale=weights) if weights is not None else nullcontext():
            svi.step(split.train_batch(idx), idx)  # a fresh draw of the images under dynamic binarization
        elapsed += time.perf_counter() - start
        result.steps += 1
        bar.update(min(decoder_passes.count, budget) - bar.n)
        if decoder_passes.count >= next_checkpoint or decoder_passes.count >= budget:
            next_checkpoint += budget / num_checkpoints
            passes = decoder_passes.count  # the training passes so far
            # evaluation passes are not training passes, and its random draws come from a forked
            # generator: the training trajectory does not depend on the evaluation's settings
            clock = time.perf_counter()
            with torch.no_grad(), torch.random.fork_rng(), ExitStack() as evaluation:
                for counter in filter(None, (decoder_passes, encoder_passes)):
                    evaluation.enter_context(counter.paused())
                score.update(*current_prior())
                val_ll = score(split.val, eval_particles).value.mean().item()
                test_ll = score(split.test, eval_particles).value.mean().item() if checkpoint_test else math.nan
            result.checkpoint_seconds += time.perf_counter() - clock
            if val_ll > result.best_val_ll:
                result.best_val_ll, result.passes_to_best, result.seconds_to_best = val_ll, passes, elapsed
                best_state = snapshot_params()
            result.curve.append((passes, val_ll, test_ll))
            if save is not None and passes < budget:  # the last checkpoint's state is the trained half
                result.train_seconds = elapsed
                current = best_state if result.passes_to_best == passes else snapshot_params()  # stored once if the same
                save(result, best_state, TrainingProgress(
                    current, svi.optim.get_state(), passes,
                    encoder_passes.count if encoder_passes is not None else 0, next_checkpoint))
    bar.close()
    result.total_passes, result.train_seconds = decoder_passes.count, elapsed
    result.decoder_per_point_step = result.total_passes / (result.steps * batch_size)
    result.encoder_per_point_step = (encoder_passes.count if encoder_passes else 0) / (result.steps * batch_size)
    decoder_passes.remove()
    if encoder_passes is not None:
        encoder_passes.remove()
    if not best_state:
        raise ValueError(f"{result.method}: no checkpoint had a finite validation log-likelihood (did training diverge?)")
    return best_state
