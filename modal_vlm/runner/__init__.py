"""Checkpointed active-learning experiments: several strategies and seeds on image folders,
resumable after an interruption, with tables and a learning-curve plot.

>>> from modal_vlm.runner import RunConfig, run_experiment
>>> config = RunConfig(data="images/train", test_data="images/test",
...                    strategies=("cec", "random"), seeds=(0, 1, 2),
...                    classifier={"model_name": "conse-efficientnet-lite0-minilm"})
>>> result = run_experiment(config, "runs/cec-vs-random")          # doctest: +SKIP
>>> result.summary[0]["final_accuracy_mean"]                       # doctest: +SKIP

Each run (strategy, seed) is :func:`modal_vlm.experiment.run_active_learning`; every finished
round is checkpointed in the run directory (:mod:`modal_vlm.runner.rundir`). Calling
:func:`run_experiment` again with the same settings after an interruption (Ctrl-C, a killed
process) continues from the last finished round and gives the numbers of an uninterrupted run.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..model.class_names import check_class_names
from ..model.estimators import get_estimator
from ..evaluation import LoopMonitor, audit_count, flip_labels
from ..experiment import check_budget, run_active_learning
from .config import PATH_SETTINGS, RESERVED_PARAMS, RUNTIME_PARAMS, RunConfig
from .curves import plot_learning_curves, summarize
from .data import RunData, load_run_data
from .rundir import PLOT, SUMMARY, RunDirectory, RunDirectoryError

# Testing hook, not part of the API: a run kills its own process (SIGKILL) right after
# checkpointing the round whose number this environment variable holds, to simulate a crash.
CRASH_AFTER_ROUND_ENV = "MODAL_VLM_CRASH_AFTER_ROUND"
#: Seed stream of ``label_noise``'s flips (with the run's seed): the same for every strategy.
_NOISE_STREAM = 0xF11B


def oracle_labels(y_pool, label_noise, n_classes, seed):
    """The labels a run's simulated oracle gives: ``y_pool``, with ``label_noise`` of them
    flipped (:func:`~modal_vlm.evaluation.flip_labels`, seeded by ``seed`` alone, so every
    strategy of a seed meets the same careless oracle).

    Parameters
    ----------
    y_pool : array-like of int, shape (n_pool,)
        The pool's true labels.
    label_noise : float
        Share of them to flip, in [0, 1).
    n_classes : int
        Number of classes.
    seed : int
        The run's seed.

    Returns
    -------
    ndarray of int, shape (n_pool,)
        The oracle's labels.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.arange(40) % 4
    >>> int((oracle_labels(y, 0.1, 4, seed=0) != y).sum()), bool((oracle_labels(y, 0.0, 4, 0) == y).all())
    (4, True)
    """
    return flip_labels(y_pool, label_noise, n_classes, random_state=[int(seed), _NOISE_STREAM]) \
        if label_noise else np.asarray(y_pool)


@dataclass(frozen=True)
class ExperimentResult:
    """What :func:`run_experiment` produced (a frozen dataclass; the fields are attributes).

    Parameters
    ----------
    records : list of dict
        Every round record of every run, each with its ``strategy`` and ``seed`` (the
        record fields of :func:`modal_vlm.experiment.run_active_learning`, plus
        ``queried_files`` and ``pseudo_labeled_files`` when the pool is a list of image
        files); also in ``rounds.json`` and ``rounds.csv``.
    summary : list of dict
        One entry per strategy: final accuracy and area under the learning curve, mean and
        std over seeds; also in ``summary.json``.
    path : pathlib.Path
        The run directory.
    plot : pathlib.Path or None
        The learning-curve plot (``learning_curve.png``), or None without matplotlib.

    Examples
    --------
    >>> from pathlib import Path
    >>> result = ExperimentResult(records=[], summary=[], path=Path("runs/x"), plot=None)
    >>> (result.path / "rounds.csv").as_posix(), result.plot is None
    ('runs/x/rounds.csv', True)
    """

    records: list
    summary: list
    path: Path
    plot: Path | None


def format_round(record) -> str:
    """One line of the per-round table (see :data:`ROUND_TABLE_HEADER`).

    ``estimate`` is the accuracy estimated without the test set, with its interval; ``stable``
    marks the rounds where the stopping signal says more labels of this kind change little.

    Examples
    --------
    >>> print(ROUND_TABLE_HEADER)
    strategy      seed  round  labels  accuracy  mean per-class acc.  query_s  train_s  estimate (interval)
    >>> print(format_round({"strategy": "cec", "seed": 0, "round": 1, "n_labeled": 10,
    ...                     "accuracy": 0.5, "mean_per_class_accuracy": 0.45,
    ...                     "seconds": {"query": 0.21, "train": 3.4},
    ...                     "estimate": {"accuracy": 0.52, "low": 0.4, "high": 0.63, "n": 10},
    ...                     "stable": False}))
    cec              0      1      10     0.500                0.450      0.2      3.4  0.520 (0.400-0.630)
    """
    seconds = record["seconds"]
    estimate = record.get("estimate")
    trust = "" if estimate is None else f"  {estimate['accuracy']:.3f} ({estimate['low']:.3f}-{estimate['high']:.3f})"
    if record.get("stable"):
        trust += "  stable"
    return (f"{record['strategy']:<12}  {record['seed']:>4}  {record['round']:>5}  {record['n_labeled']:>6}  "
            f"{record['accuracy']:>8.3f}  {record['mean_per_class_accuracy']:>19.3f}  "
            f"{seconds['query']:>7.1f}  {seconds['train']:>7.1f}{trust}")


#: Header of the per-round table printed while an experiment runs ("mean per-class acc.": the
#: mean over classes of each class's test accuracy, which class imbalance does not inflate).
ROUND_TABLE_HEADER = ("strategy      seed  round  labels  accuracy  mean per-class acc.  query_s  train_s  "
                      "estimate (interval)")


def _jsonable(value):
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    return repr(value)


def _with_absolute_paths(config: RunConfig) -> RunConfig:
    return config.override(**{key: str(Path(getattr(config, key)).resolve())
                              for key in PATH_SETTINGS if getattr(config, key) is not None})


def _header(config: RunConfig, budget: int, estimator, data: RunData) -> dict:
    """What identifies the experiment (compared on resume), plus the versions used."""
    import modal_vlm
    import torch

    params = {name: _jsonable(value) for name, value in estimator.get_params(deep=False).items()
              if name not in RUNTIME_PARAMS | RESERVED_PARAMS and not name.startswith("_")}
    settings = {**config.as_dict(), "budget": budget, "classifier": params}
    return {"config": settings, "data": data.summary(),
            "versions": {"modal_vlm": modal_vlm.__version__, "torch": torch.__version__,
                         "python": sys.version.split()[0]}}


def _crash_if_asked(record) -> None:
    if os.environ.get(CRASH_AFTER_ROUND_ENV) == str(record["round"]):
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def _finished(path: Path) -> bool:
    """Whether a run directory holds everything a finished run writes (the plot only where
    matplotlib can draw it): a run that failed writing them makes what is missing."""
    plot_possible = importlib.util.find_spec("matplotlib") is not None
    return (path / SUMMARY).exists() and ((path / PLOT).exists() or not plot_possible)


def run_experiment(config: RunConfig, out, *, data: RunData | None = None, overwrite=False,
                   progress=True, title=None, intro=None) -> ExperimentResult:
    """Run every (strategy, seed) of ``config``, checkpointing each round in ``out``.

    Parameters
    ----------
    config : RunConfig
        Validated here (strategy and model names included) before anything is written.
    out : str or path-like
        The run directory (see :mod:`modal_vlm.runner.rundir`). If it holds an unfinished run
        with the same settings, that run continues from its last finished round.
    data : RunData, optional
        In-memory data; default :func:`load_run_data(config) <load_run_data>`.
    overwrite : bool, default=False
        Replace a finished run, or a run with other settings, in ``out``.
    progress : bool, default=True
        Progress bars (rounds, encoding, training epochs; on a terminal only) and a line per
        finished round.
    title : str, optional
        Title of the learning-curve plot; default: the data folder (with its parent), the
        model and the budget.
    intro : str, optional
        A line printed (with ``progress``) once the settings, the data and the run directory
        are checked, before the backbone loads: nothing is said about a run that is refused.

    Returns
    -------
    ExperimentResult
        Every round record, the per-strategy summary, the run directory and the plot.

    Raises
    ------
    ValueError, FileNotFoundError
        Invalid settings or data (see :meth:`RunConfig.validate`, :func:`load_run_data`),
        unknown classifier parameters, a budget that does not fit the pool.
    RunDirectoryError
        ``out`` holds a finished run or one with other settings, and ``overwrite`` is False.
    """
    # Everything that can be checked without the backbone is, before it loads (seconds to
    # minutes) and before anything is written: settings, data, the run directory.
    config = _with_absolute_paths(config.validate())
    if data is None:
        data = load_run_data(config)
    else:
        check_class_names(data.class_names, what="RunData.class_names")
    budget = len(data.class_names) if config.budget is None else config.budget
    check_budget(budget, config.rounds, len(data.y_pool))
    audit_count(config.audit_fraction, 1, budget)   # an audit share that leaves the strategy no pick
    estimator = get_estimator(config.learner)(data.class_names, **{"verbose": int(progress), **config.classifier})
    run_dir = RunDirectory(out)
    header = _header(config, budget, estimator, data)
    runs = [(strategy, seed) for strategy in config.strategies for seed in config.seeds]
    n_done = sum(1 for record in run_dir.read(header, overwrite=overwrite)
                 if (record["strategy"], record["seed"]) in runs)
    if n_done == len(runs) * (config.rounds + 1) and not overwrite and _finished(run_dir.path):
        raise RunDirectoryError(f"{run_dir.path} already holds this finished run (see its {SUMMARY} "
                                "and rounds.csv). Use --overwrite (overwrite=True) to run it again.")
    if intro and progress:
        print(intro, flush=True)
    try:
        estimator.initialize()  # loads the backbone
    except ValueError as exc:
        raise ValueError(f"cannot build the classifier: {exc}") from exc
    run_dir.open(header, overwrite=overwrite)
    done = run_dir.runs()
    paths = data.X_pool if isinstance(data.X_pool, np.ndarray) and data.X_pool.dtype.kind == "U" else None
    # disable=None: bars only on a terminal; logs of batch jobs get the per-round lines alone.
    with tqdm(total=len(runs) * (config.rounds + 1), initial=n_done, unit="round",
              disable=(not progress) or None, dynamic_ncols=True) as bar:
        if progress:
            if n_done:
                bar.write(f"resuming {run_dir.path}: {n_done} of {bar.total} rounds already done")
            bar.write(ROUND_TABLE_HEADER)
        for strategy, seed in runs:
            bar.set_description(f"{strategy} seed {seed}")
            y_oracle = oracle_labels(data.y_pool, config.label_noise, len(data.class_names), seed)
            flipped = set(np.flatnonzero(y_oracle != data.y_pool).tolist())
            asked = [i for record in done.get((strategy, seed), []) for i in record["queried"]]

            def on_round(record, strategy=strategy, seed=seed, flipped=flipped, asked=asked):
                record = {"strategy": strategy, "seed": seed, **record}
                if config.label_noise:   # the oracle's slips among the labels so far
                    asked += record["queried"]
                    record["flipped_labels"] = sorted(i for i in asked if i in flipped)
                if paths is not None:
                    record["queried_files"] = paths[record["queried"]].tolist()
                    record["pseudo_labeled_files"] = paths[record["pseudo_labeled"]].tolist()
                run_dir.add_round(record)
                _crash_if_asked(record)
                bar.update(1)
                if progress:
                    bar.write(format_round(record))

            run_active_learning(estimator, strategy, data.X_pool, y_oracle, data.X_test, data.y_test,
                                rounds=config.rounds, budget=budget, first_round=config.first_round,
                                random_state=seed, history=done.get((strategy, seed)), on_round=on_round,
                                monitor=LoopMonitor(config.audit_fraction, random_state=seed),
                                on_phase=bar.set_postfix_str)   # the phase in progress, beside the bar
    summary = summarize(run_dir.records)
    run_dir.write_json(SUMMARY, summary)
    if title is None:
        folder = Path(config.data or "data")
        title = f"{folder.parent.name}/{folder.name}: {estimator.model_name}, {budget} labels per round"
    try:
        plot = plot_learning_curves(run_dir.records, run_dir.path / PLOT, title=title)
    except ImportError:
        warnings.warn("matplotlib is not installed: no learning-curve plot "
                      "(pip install 'modal-vlm[plot]')", stacklevel=2)
        plot = None
    return ExperimentResult(run_dir.records, summary, run_dir.path, plot)


__all__ = ["ExperimentResult", "RunConfig", "RunData", "RunDirectory",
           "RunDirectoryError", "load_run_data", "oracle_labels", "run_experiment"]
