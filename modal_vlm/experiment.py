"""Run an active-learning experiment: modAL's ``ActiveLearner`` around a
:class:`~modal_vlm.ClipPromptClassifier`, evaluated on a test set after every round."""
from __future__ import annotations

import time

import numpy as np
from modAL.models import ActiveLearner
from sklearn.base import clone
from sklearn.utils import check_random_state

from .metrics import classification_metrics


def _take(X, idx):
    return X[idx] if isinstance(X, np.ndarray) else [X[i] for i in idx]


def run_active_learning(estimator, query_strategy, X_pool, y_pool, X_test, y_test, *, rounds=8,
                        budget=None, first_round="random", random_state=None, on_round=None):
    """Query, label (from ``y_pool``, the simulated oracle), retrain and evaluate, ``rounds`` times.

    Parameters
    ----------
    estimator : ClipPromptClassifier
        Cloned, never modified.
    query_strategy : callable
        A modAL query strategy, ``strategy(learner, X_pool, n_instances=...)``.
    X_pool, y_pool : images, array of int
        The unlabeled pool and the labels the oracle reveals.
    X_test, y_test : images, array of int
        Evaluation set.
    rounds : int
        Number of query-and-train rounds (the protocol: 8).
    budget : int, optional
        Labels per round; default the number of classes (the protocol).
    first_round : {"random", "strategy"}
        The protocol queries round 1 at random; ``"strategy"`` lets the strategy choose from
        the zero-shot predictions (cold start).
    random_state : int or None
        Seeds the estimator, random queries and the strategy.
    on_round : callable, optional
        Called with each round's record as soon as it exists.

    Returns
    -------
    list of dict
        One record per round, round 0 being zero-shot: ``round``, ``n_labeled``,
        ``accuracy``, ``mean_per_class_accuracy``, ``class_counts``, ``queried`` (pool
        indices), ``seconds`` (``query``, ``train``, ``evaluate``).
    """
    if first_round not in ("random", "strategy"):
        raise ValueError(f"first_round must be 'random' or 'strategy', got {first_round!r}.")
    y_pool = np.asarray(y_pool)
    n_classes = len(estimator.class_names)
    budget = n_classes if budget is None else int(budget)
    if budget < 1 or budget * rounds > len(y_pool):
        raise ValueError(f"budget x rounds = {budget} x {rounds} labels do not fit a pool of {len(y_pool)}.")
    rng = check_random_state(random_state)
    learner = ActiveLearner(estimator=clone(estimator).set_params(random_state=random_state),
                            query_strategy=query_strategy)
    unlabeled = np.arange(len(y_pool))
    labeled = []
    history = []

    def evaluate(round_, queried, seconds):
        start = time.perf_counter()
        scores = classification_metrics(y_test, learner.predict(X_test))
        seconds["evaluate"] = time.perf_counter() - start
        record = {"round": round_, "n_labeled": len(labeled), **scores,
                  "class_counts": np.bincount(y_pool[labeled], minlength=n_classes).tolist(),
                  "queried": [int(i) for i in queried], "seconds": seconds}
        history.append(record)
        if on_round is not None:
            on_round(record)

    evaluate(0, [], {"query": 0.0, "train": 0.0})
    for round_ in range(1, rounds + 1):
        start = time.perf_counter()
        X_unlabeled = _take(X_pool, unlabeled)
        if round_ == 1 and first_round == "random":
            picked = rng.choice(len(unlabeled), size=budget, replace=False)
        else:
            picked, _ = learner.query(X_unlabeled, n_instances=budget)
        picked = np.asarray(picked)
        queried = unlabeled[picked]
        query_seconds = time.perf_counter() - start
        start = time.perf_counter()
        learner.teach(_take(X_pool, queried), y_pool[queried])
        train_seconds = time.perf_counter() - start
        labeled += queried.tolist()
        unlabeled = np.delete(unlabeled, picked)
        evaluate(round_, queried, {"query": query_seconds, "train": train_seconds})
    return history
