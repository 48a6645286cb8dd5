"""The comparison protocol: MAPA against VAE, IWAE and Pyro's AutoGuides (SPEC section 4).

Every method trains the same decoder with the same fixed ``sigma`` on the same split,
with the same optimiser (Adam, at one given learning rate, or at a rate chosen per method
by validation on a separate tuning seed), for the same budget of decoder passes (counted
by hooks, training only). Per-point codes (the empiricalized model's,
AutoDelta's and AutoNormal's) start at the training points' principal components by
default (:func:`~pyro_mapa.pca_codes`; from codes near 0 the empiricalized model sits on
a plateau, benchmarks/RESULTS.md). At each of
``num_checkpoints`` checkpoints the method becomes a continuous-prior model
(``N(0, I)`` for the VAE model, :func:`~pyro_mapa.fit_prior` on the codes for the
empiricalized ones) and is scored on validation and test points by one estimator for
all: importance sampling (:func:`~pyro_mapa.evaluate.importance_log_likelihood`) with
a mixture of Laplace approximations anchored at the method's own training codes whose
decoded means lie nearest the point, plus 0.1 of the prior
(:func:`~pyro_mapa.proposals.laplace_mixture_proposal`). The test log-likelihood is that
of the checkpoint with the best validation log-likelihood, estimated with as many samples
as it takes to be stable to 0.01 nats (:func:`stable_log_likelihood`).
"""

from __future__ import annotations

import math
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoDelta, AutoNormal, init_to_value
from pyro.optim import Adam

from ._checks import check_count
from .baselines import empirical_model, encoder_guide, make_decoder, make_encoder, vae_model
from .counting import PassCounter
from .datasets import load_synthetic
from .evaluate import LogLikelihood, empirical_log_likelihood, grid_log_likelihood, importance_log_likelihood
from .guide import MAPAGuide
from .initialization import pca_codes
from .iwae_elbo import IWAE_ELBO
from .mapa_elbo import MAPA_ELBO
from .posterior import MAPAPosterior
from .priors import fit_prior
from .proposals import laplace_mixture_proposal

__all__ = [
    "Method",
    "RunResult",
    "Split",
    "StableEstimate",
    "build_method",
    "continuous_log_likelihood",
    "load_split",
    "parse_method",
    "plot_curves",
    "restore_params",
    "run_comparison",
    "snapshot_params",
    "stable_log_likelihood",
    "summary_table",
    "train_and_score",
]

#: Grid points per axis of the quadrature check, by latent dimension.
GRID_POINTS = {1: 20001, 2: 801}


@dataclass
class Split:
    """Train, validation and test points with what the comparison needs to know."""

    name: str
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    sigma: float
    latent_dim: int
    true_test: float | None  # the true model's test log-likelihood, where known


def load_split(name: str, num_train: int = 1000, seed: int = 0) -> Split:
    """A synthetic set (500 validation, 500 test points) or ``"digits"`` (scikit-learn's
    1,797 8x8 images scaled to [0, 1]: 1,000 / 300 / 497, ``sigma = 0.2``, 2-D latent)."""
    if name == "digits":
        if num_train != 1000:
            raise ValueError(f"digits has a fixed split (1,000 / 300 / 497 points); num_train={num_train} cannot apply")
        from sklearn.datasets import load_digits

        x = torch.as_tensor(load_digits().data / 16.0, dtype=torch.get_default_dtype())
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        x = x[order]
        return Split(name, x[:1000], x[1000:1300], x[1300:], 0.2, 2, None)
    data = load_synthetic(name, num_train=num_train, num_test=1000, seed=seed)
    test = data.test[500:]
    true = data.log_likelihood(test).mean().item()
    return Split(name, data.train, data.test[:500], test, data.sigma, data.latent_dim, true)


def parse_method(method: str) -> tuple[str, tuple[int, ...]]:
    """``"vae"``, ``"iwae-S"``, ``"autonormal"``, ``"autodelta"``, ``"mapa-K-S"`` or ``"exact"``."""
    kind, *numbers = method.split("-")
    expected = {"vae": 0, "iwae": 1, "autonormal": 0, "autodelta": 0, "mapa": 2, "exact": 0}
    if kind not in expected or len(numbers) != expected[kind] or not all(n.isdigit() for n in numbers):
        raise ValueError(f"unknown method {method!r}: use vae, iwae-S, autonormal, autodelta, mapa-K-S or exact")
    return kind, tuple(int(n) for n in numbers)


@dataclass
class RunResult:
    """One method, one seed: the scores at the best-validation checkpoint and the curve."""

    method: str
    seed: int
    lr: float
    test_ll: float
    test_se: float
    best_val_ll: float
    passes_to_best: int
    seconds_to_best: float
    total_passes: int
    decoder_per_point_step: float
    encoder_per_point_step: float
    steps: int
    test_particles: int = 0  # importance samples per point behind test_ll (stable_log_likelihood)
    test_converged: bool | None = None  # whether test_ll had settled to 0.01 nats before the sample limit
    grid_test_ll: float | None = None  # the same by grid quadrature, for a latent of d <= 2 (a check)
    empirical_test_ll: float | None = None  # the empiricalized model's exact test LL (MAPA, exact)
    curve: list = field(default_factory=list)  # (decoder passes, val LL, test LL)


def _continuous_model(decoder: torch.nn.Module, prior: dist.Distribution, sigma: float):
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Normal(decoder(z), sigma).to_event(1), obs=x)

    return model


def continuous_log_likelihood(
    decoder: torch.nn.Module,
    prior: dist.Distribution,
    sigma: float,
    codes: torch.Tensor,
    x: torch.Tensor,
    num_particles: int,
) -> LogLikelihood:
    """``log p(x_n)`` per point of ``x`` for the continuous-prior model ``z ~ prior``,
    ``x ~ N(decoder(z), sigma^2 I)``, by the comparison's one estimator: importance
    sampling with :func:`~pyro_mapa.proposals.laplace_mixture_proposal` anchored at the
    model's training ``codes`` (0.1 of it the prior), in chunks of 200 draws."""
    return importance_log_likelihood(
        _continuous_model(decoder, prior, sigma), laplace_mixture_proposal(decoder, codes, sigma, prior=prior), x,
        num_particles=num_particles, chunk_size=min(num_particles, 200), max_plate_nesting=1,
    )


class StableEstimate(NamedTuple):
    """What :func:`stable_log_likelihood` returns: the last estimate, its samples per
    point, and whether the mean had settled (``False``: the limit stopped it first)."""

    estimate: LogLikelihood
    particles: int
    converged: bool


def _check_sample_range(start: int, limit: int, start_name: str, limit_name: str) -> None:
    """Both counts are positive ints and ``start <= limit`` (what stable_log_likelihood needs)."""
    check_count(start, start_name)
    if check_count(limit, limit_name) < start:
        raise ValueError(f"{limit_name} ({limit}) is below {start_name} ({start})")


def stable_log_likelihood(
    estimate: Callable[[int], LogLikelihood], start: int, limit: int, tolerance: float = 0.01
) -> StableEstimate:
    """``estimate(P)`` at ``P = start, 4 start, 16 start, ...`` (at most ``limit``) until the
    mean over points moves by less than ``tolerance`` nats from one ``P`` to the next.
    An importance-sampling estimate of ``log p`` is biased low, the less the more samples,
    so a mean that stops rising is one that has stopped moving. ``start == limit`` gives
    one estimate, not called converged."""
    _check_sample_range(start, limit, "start", "limit")
    particles, current = start, estimate(start)
    while 4 * particles <= limit:
        particles, previous, current = 4 * particles, current, estimate(4 * particles)
        if abs(current.value.mean() - previous.value.mean()) < tolerance:
            return StableEstimate(current, particles, True)
    return StableEstimate(current, particles, False)


class Method(NamedTuple):
    """What :func:`build_method` makes: the model, its guide and loss, and the VAE
    family's encoder (``None`` for the others)."""

    model: Callable
    guide: Callable
    loss: pyro.infer.ELBO
    encoder: torch.nn.Module | None


def build_method(method: str, split: Split, decoder: torch.nn.Module, code_init: str = "pca") -> Method:
    """The model, guide and loss of ``method`` on ``split``'s training points, around
    ``decoder``, with every guide's parameters set up (an AutoGuide or a MAPAGuide traces
    the model once, on all ``N`` training points). Call it with an empty param store
    (``pyro.clear_param_store()``): ``pyro.module`` and ``pyro.param`` would otherwise
    reuse another run's values.

    :param code_init: where the per-point codes start (MAPA's and exact enumeration's
        codes, AutoDelta's points, AutoNormal's means): ``"pca"``, the training points'
        principal components (:func:`~pyro_mapa.pca_codes`), or ``"random"``: the
        empiricalized model's ``0.1 N(0, I)``, and Pyro's default for the AutoGuides
        (AutoNormal's ``init_to_feasible``: every mean at 0; AutoDelta's ``init_to_median``:
        the median of a few prior draws per point). The encoders of VAE and IWAE have no
        per-point codes and start as they are.
    """
    kind, numbers = parse_method(method)
    if code_init not in ("pca", "random"):
        raise ValueError(f"code_init must be 'pca' or 'random', got {code_init!r}")
    if len(pyro.get_param_store()):
        raise ValueError(
            f"the param store already holds {sorted(pyro.get_param_store().keys())[:3]}...: build_method would "
            "reuse them; call pyro.clear_param_store() first"
        )
    train, sigma, (num_points, obs_dim), d = split.train, split.sigma, split.train.shape, split.latent_dim
    init_codes = pca_codes(train, d) if code_init == "pca" else None

    def create_plates(x, idx=None):
        return pyro.plate("data", num_points, subsample=idx)

    if kind in ("vae", "iwae"):
        model, encoder = vae_model(decoder, sigma, num_points, d), make_encoder(obs_dim, d)
        loss = Trace_ELBO() if kind == "vae" else IWAE_ELBO(numbers[0], max_plate_nesting=1)
        return Method(model, encoder_guide(encoder, num_points), loss, encoder)
    if kind in ("mapa", "exact"):
        model = empirical_model(decoder, sigma, num_points, d, init_codes)
        num_cached = min(num_points, 64) if kind == "exact" else max(64, numbers[0])  # K = N needs no cache
        posterior = MAPAPosterior.fit(train, scale=sigma, num_neighbors=num_cached)
        guide = MAPAGuide(model, posterior, create_plates=create_plates)
        loss = MAPA_ELBO(*((num_points, 0) if kind == "exact" else numbers), max_plate_nesting=1)
    else:
        model = vae_model(decoder, sigma, num_points, d)
        autoguide = AutoNormal if kind == "autonormal" else AutoDelta
        init = {} if init_codes is None else {"init_loc_fn": init_to_value(values={"z": init_codes})}
        guide, loss = autoguide(model, create_plates=create_plates, **init), Trace_ELBO()
    guide(train, torch.arange(num_points))  # set up on all N points: point n starts at its own code
    return Method(model, guide, loss, None)


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
    method: str,
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
    inspect: Callable[[torch.nn.Module, dist.Distribution, torch.Tensor], None] | None = None,
) -> RunResult:
    """Train ``method`` for ``budget`` decoder passes and score it (see the module docstring).

    At each of ``num_checkpoints`` checkpoints the validation and test log-likelihoods are
    estimated with ``eval_particles`` importance samples per point (the curve); the
    parameters of the checkpoint with the best validation value are kept, and scored on
    the test points once, at the end, by :func:`stable_log_likelihood` from
    ``test_particles`` up to ``max_test_particles`` samples per point, until stable to
    0.01 nats. For a latent of ``d <= 2`` it is also integrated on a grid
    (:func:`~pyro_mapa.evaluate.grid_log_likelihood` over the codes' range plus 4 in every
    direction, ``GRID_POINTS[d]`` points per axis), a check that needs no proposal.

    :param code_init: where per-point codes start, as in :func:`build_method`.
    :param inspect: called once at the end with the best checkpoint's decoder, its
        continuous prior and its training codes, for whoever wants to score it otherwise
        (benchmarks/estimator_stability.py, benchmarks/prior_family.py).
    """
    kind, _ = parse_method(method)
    for name, count in [("budget", budget), ("batch_size", batch_size), ("num_checkpoints", num_checkpoints),
                        ("eval_particles", eval_particles)]:
        check_count(count, name)
    _check_sample_range(test_particles, max_test_particles, "test_particles", "max_test_particles")
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    train, sigma, d = split.train, split.sigma, split.latent_dim
    decoder = make_decoder(d, train.shape[1])
    model, guide, loss, encoder = build_method(method, split, decoder, code_init)
    decoder_passes = PassCounter(decoder)  # attached after every guide's set-up: only training passes count
    encoder_passes = PassCounter(encoder) if encoder is not None else None
    num_points = len(train)
    svi = SVI(model, guide, Adam({"lr": lr}), loss=loss)

    def train_codes() -> torch.Tensor:
        if kind in ("mapa", "exact"):
            return pyro.param("codes").detach()
        if encoder is not None:
            return encoder(train).chunk(2, -1)[0].detach()
        return guide.median(train)["z"].detach()

    def current_prior() -> tuple[dist.Distribution, torch.Tensor]:
        """The continuous prior of the current parameters, and the training codes."""
        codes = train_codes()
        if kind in ("mapa", "exact"):
            return fit_prior(codes, "gmm", num_components=10, seed=seed), codes
        return dist.Normal(torch.zeros(d), 1.0).to_event(1), codes

    def estimate(prior: dist.Distribution, codes: torch.Tensor, which: str, num_particles: int) -> LogLikelihood:
        x = split.val if which == "val" else split.test
        return continuous_log_likelihood(decoder, prior, sigma, codes, x, num_particles)

    result = RunResult(method, seed, lr, -math.inf, 0.0, -math.inf, 0, 0.0, 0, 0.0, 0.0, 0)
    best_state = {}
    next_checkpoint, elapsed = budget / num_checkpoints, 0.0
    while decoder_passes.count < budget:
        idx = torch.randint(0, num_points, (batch_size,))
        start = time.perf_counter()
        svi.step(train[idx], idx)
        elapsed += time.perf_counter() - start
        result.steps += 1
        if decoder_passes.count >= next_checkpoint or decoder_passes.count >= budget:
            next_checkpoint += budget / num_checkpoints
            passes = decoder_passes.count  # the training passes so far
            # evaluation passes are not training passes, and its random draws come from a forked
            # generator: the training trajectory does not depend on the evaluation's settings
            with torch.no_grad(), torch.random.fork_rng(), ExitStack() as evaluation:
                for counter in filter(None, (decoder_passes, encoder_passes)):
                    evaluation.enter_context(counter.paused())
                prior, codes = current_prior()
                val_ll = estimate(prior, codes, "val", eval_particles).value.mean().item()
                test_ll = estimate(prior, codes, "test", eval_particles).value.mean().item()
            if val_ll > result.best_val_ll:
                result.best_val_ll, result.passes_to_best, result.seconds_to_best = val_ll, passes, elapsed
                best_state = snapshot_params()
            result.curve.append((passes, val_ll, test_ll))
    result.total_passes = decoder_passes.count
    decoder_passes.remove()
    if encoder_passes is not None:
        encoder_passes.remove()
    if not best_state:
        raise ValueError(f"{method}: no checkpoint had a finite validation log-likelihood (did training diverge?)")
    restore_params(best_state)
    with torch.no_grad():  # the best-validation checkpoint, scored once, until stable
        prior, codes = current_prior()
        final, result.test_particles, result.test_converged = stable_log_likelihood(
            lambda p: estimate(prior, codes, "test", p), test_particles, max_test_particles
        )
        result.test_ll = final.value.mean().item()
        result.test_se = (final.stderr.square().mean() / len(split.test)).sqrt().item()
        if kind in ("mapa", "exact"):
            result.empirical_test_ll = empirical_log_likelihood(decoder, codes, split.test, sigma).mean().item()
        if d <= 2:
            low, high = codes.min().item() - 4.0, codes.max().item() + 4.0
            grid = grid_log_likelihood(decoder, prior, sigma, split.test, low, high, GRID_POINTS[d])
            result.grid_test_ll = grid.mean().item()
        if inspect is not None:
            inspect(decoder, prior, codes)
    result.decoder_per_point_step = result.total_passes / (result.steps * batch_size)
    result.encoder_per_point_step = (encoder_passes.count if encoder_passes else 0) / (result.steps * batch_size)
    return result


def run_comparison(
    dataset: str,
    methods: list[str],
    seeds: list[int],
    budget: int,
    *,
    learning_rates: tuple[float, ...] = (1e-2,),
    code_init: str = "pca",
    num_train: int = 1000,
    num_checkpoints: int = 20,
    eval_particles: int = 100,
    test_particles: int = 2000,
    max_test_particles: int = 32000,
    progress: bool | None = None,
) -> tuple[Split, list[RunResult], list[RunResult]]:
    """Every method under every seed on one split (the split's seed is the first seed;
    ``num_train`` training points for the synthetic sets), by :func:`train_and_score` with
    the given ``code_init``, ``num_checkpoints``, ``eval_particles``, ``test_particles``
    and ``max_test_particles``.

    :param learning_rates: Adam's learning rate, or several to choose from: each method
        then trains once at each of them on a tuning seed that is not reported (one past
        the largest of ``seeds``), and every reported seed trains at the rate whose tuning
        run reached the best validation log-likelihood (no seed's reported result was
        picked for being lucky).
    :returns: the split, the reported runs (method by method, seeds in order), and the
        tuning runs (empty for a single learning rate).
    """
    from tqdm import tqdm

    for method in methods:
        parse_method(method)
    if not learning_rates or any(not lr > 0 for lr in learning_rates):
        raise ValueError(f"learning_rates must be positive numbers, got {learning_rates}")
    split = load_split(dataset, num_train=num_train, seed=seeds[0])
    tuning_seed = max(seeds) + 1
    num_tuning = len(learning_rates) if len(learning_rates) > 1 else 0
    bar = tqdm(total=len(methods) * (len(seeds) + num_tuning), desc="compare",
               disable=None if progress is None else not progress)

    def run(method: str, seed: int, lr: float) -> RunResult:
        result = train_and_score(
            method, split, seed, budget, lr=lr, code_init=code_init, num_checkpoints=num_checkpoints,
            eval_particles=eval_particles, test_particles=test_particles, max_test_particles=max_test_particles,
        )
        bar.update()
        return result

    runs, tuning = [], []
    for method in methods:
        lr = learning_rates[0]
        if num_tuning:
            trials = [run(method, tuning_seed, rate) for rate in learning_rates]
            tuning += trials
            lr = max(trials, key=lambda r: r.best_val_ll).lr
        runs += [run(method, seed, lr) for seed in seeds]
    bar.close()
    return split, runs, tuning


def summary_table(split: Split, runs: list[RunResult]) -> str:
    """Per method: its learning rate; the test LL's median and spread (min..max over seeds)
    by importance sampling, and the most samples per point a seed needed; the median by grid
    quadrature (``d <= 2``: the check); passes per point per step; median passes and
    training seconds to the best checkpoint; and (MAPA, exact) the empiricalized model's
    exact test LL (median)."""
    import statistics

    def median_or_dash(values: list) -> str:
        return f"{statistics.median(values):9.3f}" if None not in values else f"{'-':>9}"

    lines = [
        f"{split.name}: N = {len(split.train)}, sigma = {split.sigma}, seeds = {sorted({r.seed for r in runs})}",
        f"{'method':12} {'lr':>6} {'test LL':>9} {'min..max':>17} {'samples':>7} {'grid':>9} {'dec/pt/step':>11} "
        f"{'enc/pt/step':>11} {'passes to best':>14} {'s to best':>9} {'empirical':>9}",
    ]
    for method in dict.fromkeys(r.method for r in runs):
        rs = [r for r in runs if r.method == method]
        ll = [r.test_ll for r in rs]
        lines.append(
            f"{method:12} {rs[0].lr:6.3g} {statistics.median(ll):9.3f} {min(ll):8.3f}..{max(ll):<8.3f} "
            f"{max(r.test_particles for r in rs):6d}{' ' if all(r.test_converged for r in rs) else '*'} "
            f"{median_or_dash([r.grid_test_ll for r in rs])} "
            f"{statistics.median(r.decoder_per_point_step for r in rs):11.2f} "
            f"{statistics.median(r.encoder_per_point_step for r in rs):11.2f} "
            f"{statistics.median(r.passes_to_best for r in rs):14.0f} {statistics.median(r.seconds_to_best for r in rs):9.1f} "
            + median_or_dash([r.empirical_test_ll for r in rs])
        )
    if split.true_test is not None:
        lines.append(f"{'true model':12} {'':>6} {split.true_test:9.3f}   (the ceiling)")
    if not all(r.test_converged for r in runs):
        lines.append("* a seed's test LL had not settled to 0.01 nats at the sample limit (the grid is the check)")
    return "\n".join(lines)


def plot_curves(runs: list[RunResult], path, title: str, ceiling: float | None = None) -> None:
    """Test log-likelihood against decoder passes: one curve per method (median over
    seeds), with the band between the seeds' min and max."""
    from matplotlib.figure import Figure  # not pyplot: no global backend switch, no open figures
    import numpy as np

    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for method in dict.fromkeys(r.method for r in runs):
        curves = [np.array(r.curve) for r in runs if r.method == method]
        length = min(len(c) for c in curves)
        passes = np.median([c[:length, 0] for c in curves], axis=0)
        test = np.array([c[:length, 2] for c in curves])
        (line,) = ax.plot(passes, np.median(test, axis=0), label=method)
        ax.fill_between(passes, test.min(0), test.max(0), color=line.get_color(), alpha=0.2)
    if ceiling is not None:
        ax.axhline(ceiling, color="k", ls="--", label="true model")
    ax.set_xlabel("decoder passes (training)")
    ax.set_ylabel("test log-likelihood (nats per point)")
    ax.set_title(title)
    lows = [r.test_ll for r in runs]
    ax.set_ylim(bottom=min(lows) - 2 * (max(lows) - min(lows) + 0.1), top=(ceiling or max(lows)) + 0.5)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
