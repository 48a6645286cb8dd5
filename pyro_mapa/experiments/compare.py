"""The comparison: every method under every seed on one split, each method's learning rate
tuned on a seed that is not reported (one run's protocol: :mod:`pyro_mapa.experiments.training`)."""

from __future__ import annotations

from .._progress import progress_bar
from .methods import Method, parse_method
from .split import Split, load_split
from .training import RunResult, train_and_score

__all__ = ["run_comparison"]


def run_comparison(
    split: Split | str,
    methods: list[str | Method],
    seeds: list[int],
    budget: int,
    *,
    learning_rates: tuple[float, ...] = (1e-2,),
    num_train: int | None = None,
    progress: bool | None = None,
    **training,
) -> tuple[Split, list[RunResult], list[RunResult]]:
    """Every method under every seed on one split, by
    :func:`~pyro_mapa.experiments.training.train_and_score` with the keyword arguments
    ``training`` (``code_init``, ``num_checkpoints``, ``eval_particles``, ``test_particles``,
    ``max_test_particles``, ``batch_size``, ``checkpoint_test``, ``scorer``, ``scorer_fit_steps``,
    ``refine_steps``).

    :param split: a :class:`~pyro_mapa.experiments.split.Split`, or the name of a built-in
        data set, split by :func:`~pyro_mapa.experiments.split.load_split` with the first seed
        (and ``num_train`` training points).

    :param learning_rates: Adam's learning rate, or several to choose from: each method
        then trains once at each of them on a tuning seed that is not reported (one past
        the largest of ``seeds``), and every reported seed trains at the rate whose tuning
        run reached the best validation log-likelihood (no seed's reported result was
        picked for being lucky).
    :returns: the split, the reported runs (method by method, seeds in order), and the
        tuning runs (empty for a single learning rate).
    """
    methods = [parse_method(m) if isinstance(m, str) else m for m in methods]  # names checked before training
    if not learning_rates or any(not lr > 0 for lr in learning_rates):
        raise ValueError(f"learning_rates must be positive numbers, got {learning_rates}")
    if isinstance(split, str):
        split = load_split(split, num_train=num_train, seed=seeds[0])
    tuning_seed = max(seeds) + 1
    num_tuning = len(learning_rates) if len(learning_rates) > 1 else 0
    bar = progress_bar(total=len(methods) * (len(seeds) + num_tuning), progress=progress, desc="compare")

    def run(method: Method, seed: int, lr: float) -> RunResult:
        result = train_and_score(method, split, seed, budget, lr=lr, progress=progress, **training)
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
