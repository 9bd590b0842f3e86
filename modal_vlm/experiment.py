"""One active-learning run: modAL's ``ActiveLearner`` around a
:class:`~modal_vlm.ClipPromptClassifier`, evaluated on a test set after every round.

A run is a pure function of its inputs and seed: the estimator refits from scratch every
round with ``random_state=seed``, and each round's query draws its randomness from
``(seed, round)`` (:func:`round_seed`). The labeled set after any round is therefore all a
run needs to continue, and :func:`run_active_learning` resumes from the records of the
rounds already done (``history=``) with the same results as an uninterrupted run. The
records hold pseudo-labels too (strategies that label some picks themselves, such as
CB+SQ), so the training set is rebuilt exactly, in its original order.
:mod:`modal_vlm.runner` builds checkpointed, multi-strategy, multi-seed experiments on it.
"""
from __future__ import annotations

import inspect
import time

import numpy as np
from modAL.models import ActiveLearner
from sklearn.base import clone

from ._validation import check_int
from .metrics import classification_metrics, ood_metrics
from .sentinels import NONE
from .strategies import get_strategy, random_query
from .strategies._result import pseudo_labels, split_result

#: Values of ``first_round``: the protocol's random round 1, or the strategy from zero-shot.
FIRST_ROUNDS = ("random", "strategy")


def round_seed(seed, round_):
    """The seed of one round's query, derived from the run's ``seed`` and the round number.

    Parameters
    ----------
    seed : int or None
        The run's seed; None gives None (unseeded).
    round_ : int
        Round number (1 is the first query).

    Returns
    -------
    int or None
        A 32-bit seed from ``numpy.random.SeedSequence([seed, round_])``: the same for the
        same pair, unrelated across rounds and runs.

    Examples
    --------
    >>> round_seed(0, 1) == round_seed(0, 1) != round_seed(0, 2)
    True
    """
    if seed is None:
        return None
    return int(np.random.SeedSequence([int(seed), int(round_)]).generate_state(1)[0])


def check_budget(budget, rounds, n_pool) -> None:
    """Raise ``ValueError`` unless ``rounds`` rounds of ``budget`` labels fit a pool of ``n_pool``.

    Parameters
    ----------
    budget : int
        Labels per round, >= 1.
    rounds : int
        Query rounds, >= 1.
    n_pool : int
        Size of the unlabeled pool.

    Raises
    ------
    ValueError
        ``budget`` or ``rounds`` is not an integer >= 1 (see :func:`check_int`), or
        ``budget * rounds > n_pool``.

    Examples
    --------
    >>> check_budget(10, 8, 80)
    >>> check_budget(10, 8, 79)
    Traceback (most recent call last):
    ...
    ValueError: budget x rounds = 10 x 8 = 80 labels do not fit a pool of 79 images.
    """
    check_int("rounds", rounds)
    check_int("budget", budget)
    if budget * rounds > n_pool:
        raise ValueError(f"budget x rounds = {budget} x {rounds} = {budget * rounds} labels do not "
                         f"fit a pool of {n_pool} images.")


def per_class_accuracy(y_true, y_pred, n_classes) -> list:
    """Accuracy on each class's test samples; None for a class without test samples.

    Parameters
    ----------
    y_true : array-like of int, shape (n_samples,)
        True labels, in ``range(n_classes)``.
    y_pred : array-like of int, shape (n_samples,)
        Predicted labels.
    n_classes : int
        Number of classes; the list has one entry per class.

    Returns
    -------
    list of float or None
        Entry ``c``: the fraction of the class-``c`` samples predicted ``c`` (its recall),
        or None when ``y_true`` has no sample of class ``c``.

    Examples
    --------
    >>> per_class_accuracy([0, 0, 1], [0, 1, 1], 3)
    [0.5, 1.0, None]
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return [float(np.mean(y_pred[y_true == c] == c)) if np.any(y_true == c) else None
            for c in range(n_classes)]


def _take(X, idx):
    return X[idx] if isinstance(X, np.ndarray) else [X[i] for i in idx]


def _query(strategy, learner, X_unlabeled, budget, seed):
    """Pool positions chosen by ``strategy`` for the oracle, and the positions and labels it
    pseudo-labels (the metrics hook of :mod:`modal_vlm.strategies`), checked.

    ``seed`` goes to strategies taking one; ``return_metrics=True`` too, as with modAL 0.4.1
    a strategy returns its metrics (and pseudo-labels) only when asked.
    """
    parameters = inspect.signature(strategy).parameters
    kwargs = {key: value for key, value in (("random_state", seed), ("return_metrics", True))
              if key in parameters}
    picked, metrics = split_result(strategy(learner, X_unlabeled, n_instances=budget, **kwargs))
    name = getattr(strategy, "__name__", repr(strategy))
    if len(picked) != budget or len(np.unique(picked)) != budget or np.any(picked < 0) \
            or np.any(picked >= len(X_unlabeled)):
        raise ValueError(f"query strategy {name} returned {picked.tolist()}; expected {budget} distinct "
                         f"positions in a pool of {len(X_unlabeled)}.")
    pseudo, labels = pseudo_labels(metrics)
    if len(np.unique(pseudo)) != len(pseudo) or np.any(pseudo < 0) or np.any(pseudo >= len(X_unlabeled)) \
            or np.isin(pseudo, picked).any() or not np.isin(labels, learner.estimator.classes_).all():
        raise ValueError(f"query strategy {name} pseudo-labeled positions {pseudo.tolist()} as {labels.tolist()}; "
                         f"expected distinct positions in a pool of {len(X_unlabeled)}, none of them queried, "
                         "labeled with classes_.")
    return picked, pseudo, labels


def _labeled_so_far(history, rounds, y_pool):
    """What the recorded rounds labeled: the oracle's pool indices in labeling order, and the
    training set (indices and labels; each round's oracle picks, then its pseudo-labels), checked."""
    if [record["round"] for record in history] != list(range(len(history))):
        raise ValueError("history must hold the records of rounds 0, 1, 2... in order.")
    if len(history) > rounds + 1:
        raise ValueError(f"history has {len(history) - 1} query rounds; the run has only {rounds}.")
    labeled, taught, taught_labels = [], [], []
    for record in history:
        queried = [int(i) for i in record["queried"]]
        pseudo = [int(i) for i in record.get("pseudo_labeled", [])]
        labels = [int(c) for c in record.get("pseudo_labels", [])]
        if any(not 0 <= i < len(y_pool) for i in queried + pseudo):
            raise ValueError(f"history's round {record['round']} labels indices outside the pool of {len(y_pool)}.")
        if len(labels) != len(pseudo):
            raise ValueError(f"history's round {record['round']} has {len(pseudo)} pseudo_labeled indices "
                             f"but {len(labels)} pseudo_labels.")
        labeled += queried
        taught += queried + pseudo
        taught_labels += [int(c) for c in y_pool[queried]] + labels
    if len(set(taught)) != len(taught) or any(not 0 <= i < len(y_pool) for i in taught):
        raise ValueError("history's queried or pseudo-labeled indices repeat or lie outside the pool.")
    return labeled, taught, taught_labels


def run_active_learning(estimator, query_strategy, X_pool, y_pool, X_test, y_test, *, rounds=8,
                        budget=None, first_round="random", random_state=None, history=None,
                        on_round=None, monitor=None, on_phase=None):
    """Query, label (from ``y_pool``, the simulated oracle), retrain and evaluate, ``rounds`` times.

    Parameters
    ----------
    estimator : ClipPromptClassifier
        Cloned (with ``random_state``), never modified.
    query_strategy : callable or str
        A modAL query strategy, ``strategy(learner, X_pool, n_instances=...)`` (given
        ``random_state=`` when it accepts one), or a name for
        :func:`modal_vlm.get_strategy` (``"cec"``, ``"entropy+pcb"``...).
    X_pool, y_pool : images, array of int
        The unlabeled pool and the labels the oracle reveals: class indices, or
        :data:`modal_vlm.NONE` for images of none of the classes (the oracle answers "none
        of these classes": the answer costs a label and is taught like any other).
    X_test, y_test : images, array of int
        Evaluation set; images labeled :data:`~modal_vlm.NONE` are left out of the accuracies
        and scored as out-of-distribution (``auroc``, ``fpr_at_95_tpr``).
    rounds : int, default=8
        Number of query-and-train rounds (the protocol: 8).
    budget : int, optional
        Labels per round; default the number of classes (the protocol).
    first_round : {"random", "strategy"}, default="random"
        The protocol queries round 1 at random; ``"strategy"`` lets the strategy choose from
        the zero-shot predictions (cold start).
    random_state : int or None
        Seeds the estimator and, through :func:`round_seed`, every round's query.
    history : list of dict, optional
        Records of rounds already done (as returned or passed to ``on_round``, e.g. read back
        from a checkpoint): the run continues after the last one. With an int
        ``random_state`` the result equals that of an uninterrupted run.
    on_round : callable, optional
        Called with each new round's record as soon as it exists.
    monitor : LoopMonitor, optional
        A :class:`modal_vlm.evaluation.LoopMonitor`, started here (its state then describes
        this run; its own ``random_state`` seeds the audit picks and the stop set): each
        round's query leaves the audit share to random picks, the picks are scored by the
        model before it learns them, and every record gains the monitor's fields (see
        Returns). A resumed run gives the same values as an uninterrupted one.
    on_phase : callable, optional
        Called with ``"encode"``, ``"query"``, ``"train"`` or ``"evaluate"`` as each phase
        starts (progress displays).

    Returns
    -------
    list of dict
        One record per round, round 0 being zero-shot: ``round``, ``n_labeled`` (oracle
        labels so far: the budget spent), ``n_none`` (of those, "none of these classes"
        answers), ``n_pseudo_labeled`` (pseudo-labeled training samples so far), ``accuracy``,
        ``mean_per_class_accuracy`` (the balanced accuracy), ``per_class_accuracy`` (None for
        a class absent from the test set), with a test set holding images of none of the
        classes ``auroc`` and ``fpr_at_95_tpr`` of ``score_samples`` (see
        :func:`modal_vlm.metrics.ood_metrics`), ``class_counts`` (oracle labels per class
        so far), ``queried`` (pool indices sent to the oracle) and ``queried_labels``,
        ``pseudo_labeled`` (pool indices the strategy labeled itself) and ``pseudo_labels``
        (the labels it gave them), ``pseudo_correct`` (how many of those equal ``y_pool``),
        ``seconds`` (``encode``: the pool and test embeddings, in round 0; ``query``,
        ``train``, ``evaluate``). With a ``monitor``, also ``audit`` (the queried indices
        drawn at random: every pick of a random round), ``queried_proba`` (the model's
        probabilities on the queried images before it learned them), ``estimate``
        (``{"accuracy", "low", "high", "n"}`` on the unlabeled pool, None before anything
        can be estimated), ``kappa`` and ``changed`` (agreement with the previous model on
        the stop set), ``stable`` (the stopping signal), ``suspect_labels`` (pool indices,
        most suspect first) and ``calibration`` (``temperature``, and the test set's
        ``ece`` of the calibrated and ``ece_uncalibrated`` of the raw confidence).

    Raises
    ------
    ValueError
        Unknown ``first_round`` or strategy name, ``budget x rounds`` larger than the pool,
        an inconsistent ``history``, a strategy returning a wrong selection, or a pool that
        pseudo-labels have left smaller than ``budget``.

    Notes
    -----
    Semi-supervised fits. With an estimator in a UEO fit mode (``fit_mode="ueo"`` or
    ``"infomax"``) every round's fit also gets the images still unlabeled, as
    ``X_unlabeled`` (``learner.teach(X, y, X_unlabeled=...)``).

    Pseudo-labels. A strategy may label some pool samples itself instead of sending them to
    the oracle (CB+SQ's selective querying): its metrics then hold ``"pseudo_labeled"``
    (positions in the pool it was given, disjoint from its ``budget`` picks) and
    ``"pseudo_labels"`` (values of ``classes_``); see :ref:`strategies-pseudo-labels`. The
    round then trains on its picks with the oracle's labels and on those samples with the
    strategy's labels, which stay in the training set like any label; the budget, and
    ``n_labeled``, count oracle labels only.

    Examples
    --------
    >>> import numpy as np
    >>> from modal_vlm import ClipPromptClassifier
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8), np.arange(30) % 3
    >>> clf = ClipPromptClassifier(["cat", "dog", "car"], model_name="tiny-vit", n_ctx=2,
    ...                            max_epochs=2, verbose=0)
    >>> history = run_active_learning(clf, "entropy", X[:24], y[:24], X[24:], y[24:],
    ...                               rounds=2, random_state=0)
    >>> [(r["round"], r["n_labeled"]) for r in history]
    [(0, 0), (1, 3), (2, 6)]
    >>> resumed = run_active_learning(clf, "entropy", X[:24], y[:24], X[24:], y[24:], rounds=2,
    ...                               random_state=0, history=history[:2])
    >>> [r["queried"] for r in resumed] == [r["queried"] for r in history]
    True
    """
    if first_round not in FIRST_ROUNDS:
        raise ValueError(f"first_round must be one of {FIRST_ROUNDS}, got {first_round!r}.")
    strategy = get_strategy(query_strategy) if isinstance(query_strategy, str) else query_strategy
    y_pool, y_test = np.asarray(y_pool), np.asarray(y_test)
    n_classes = len(estimator.class_names)
    budget = n_classes if budget is None else budget
    check_budget(budget, rounds, len(y_pool))
    history = list(history or [])
    labeled, taught, taught_labels = _labeled_so_far(history, rounds, y_pool)
    if len(history) == rounds + 1:
        return history

    phase = on_phase or (lambda name: None)
    model = clone(estimator).set_params(random_state=random_state)
    phase("encode")
    start = time.perf_counter()
    # Encode everything up front, in one fixed order: the embeddings (and so every later
    # number) are then the same whether this run is fresh or resumed.
    model.transform(X_pool)
    model.transform(X_test)
    encode_seconds = time.perf_counter() - start
    unlabeled = np.setdiff1d(np.arange(len(y_pool)), taught)  # sorted, as np.delete keeps it
    # A semi-supervised fit mode (UEO, InfoMax) also learns from the images not labeled yet.
    semi_supervised = getattr(model, "fit_mode", "supervised") != "supervised"

    def unlabeled_kwargs():
        return {"X_unlabeled": _take(X_pool, unlabeled)} if semi_supervised else {}

    learner = ActiveLearner(estimator=model, query_strategy=strategy,
                            X_training=_take(X_pool, taught) if taught else None,
                            y_training=np.asarray(taught_labels, dtype=y_pool.dtype) if taught else None,
                            **(unlabeled_kwargs() if taught else {}))

    known_test = y_test != NONE
    if monitor is not None:
        monitor.start(model, X_pool, history)

    def record(round_, queried, pseudo, pseudo_given, seconds, observed=None):
        phase("evaluate")
        start = time.perf_counter()
        y_pred = learner.predict(X_test)
        ood = {} if known_test.all() else ood_metrics(learner.estimator.score_samples(X_test), known_test)
        seconds["evaluate"] = time.perf_counter() - start
        trust = {} if monitor is None else {
            **(observed or {"audit": [], "queried_proba": []}),
            **monitor.update(model, _take(X_pool, np.setdiff1d(np.arange(len(y_pool)), taught))),
            "calibration": monitor.test_calibration(model, X_test, y_test)}
        answers = y_pool[labeled]
        entry = {"round": round_, "n_labeled": len(labeled), "n_none": int(np.sum(answers == NONE)),
                 "n_pseudo_labeled": len(taught) - len(labeled),
                 **classification_metrics(y_test[known_test], y_pred[known_test]), **ood,
                 "per_class_accuracy": per_class_accuracy(y_test, y_pred, n_classes),
                 "class_counts": np.bincount(answers[answers >= 0], minlength=n_classes).tolist(),
                 "queried": [int(i) for i in queried], "queried_labels": [int(c) for c in y_pool[queried]],
                 "pseudo_labeled": [int(i) for i in pseudo], "pseudo_labels": [int(c) for c in pseudo_given],
                 "pseudo_correct": int(np.sum(y_pool[pseudo] == pseudo_given)), "seconds": seconds, **trust}
        history.append(entry)
        if on_round is not None:
            on_round(entry)

    empty = np.zeros(0, dtype=np.intp)
    if not history:
        record(0, empty, empty, empty, {"encode": encode_seconds, "query": 0.0, "train": 0.0})
    for round_ in range(len(history), rounds + 1):
        if len(unlabeled) < budget:
            raise ValueError(f"round {round_}: {len(unlabeled)} unlabeled images left for a budget of {budget}; "
                             f"{len(taught) - len(labeled)} pseudo-labels took the rest of the pool.")
        phase("query")
        start = time.perf_counter()
        round_strategy = random_query if round_ == 1 and first_round == "random" else strategy
        # The audit share is drawn first, at random; the strategy chooses the rest among the others.
        audit = monitor.audit_positions(round_, len(unlabeled), budget) \
            if monitor is not None and round_strategy is not random_query else np.zeros(0, dtype=np.intp)
        candidates = np.delete(np.arange(len(unlabeled)), audit)
        picked, pseudo_picked, pseudo_given = _query(round_strategy, learner, _take(X_pool, unlabeled[candidates]),
                                                     budget - len(audit), round_seed(random_state, round_))
        picked, pseudo_picked = np.concatenate([candidates[picked], audit]), candidates[pseudo_picked]
        queried, pseudo = unlabeled[picked], unlabeled[pseudo_picked]
        query_seconds = time.perf_counter() - start
        observed = None if monitor is None else monitor.observe(
            model, _take(X_pool, queried), y_pool[queried], ids=queried,
            audit=np.ones(budget, bool) if round_strategy is random_query else np.isin(picked, audit))
        phase("train")
        start = time.perf_counter()
        unlabeled = np.delete(unlabeled, np.concatenate([picked, pseudo_picked]))
        learner.teach(_take(X_pool, np.concatenate([queried, pseudo])),
                      np.concatenate([y_pool[queried], pseudo_given]).astype(y_pool.dtype), **unlabeled_kwargs())
        train_seconds = time.perf_counter() - start
        labeled += queried.tolist()
        taught += queried.tolist() + pseudo.tolist()
        record(round_, queried, pseudo, pseudo_given, {"encode": 0.0, "query": query_seconds, "train": train_seconds},
               observed)
    return history
