"""Uncertainty sampling: entropy, margin and least confidence of the predicted probabilities.

Each strategy ranks the pool by one score and takes the ``n_instances`` most uncertain
samples; ties are broken at random with ``random_state``. They need only probabilities, so
they work in round 0 from the zero-shot predictions of :class:`~modal_vlm.ClipPromptClassifier`.
"""
from __future__ import annotations

import numpy as np
import torch

from ..embeddings.disk import as_tensor
from ._linalg import row_blocks
from ._pool import prepare
from ._result import query_result


def entropy(proba, prior=None) -> np.ndarray:
    """Shannon entropy (nats) of each row of ``proba``, optionally after calibration.

    Parameters
    ----------
    proba : array-like of shape (n_samples, n_classes)
        Class probabilities, one row per sample (rows are renormalised, so they need not
        sum to exactly 1).
    prior : array-like of shape (n_classes,), optional
        Divide each class's probability by its prior and renormalise each row before taking
        the entropy (the calibration of :func:`~modal_vlm.strategies.cec.calibrated_entropy`).

    Returns
    -------
    np.ndarray of shape (n_samples,), float32
        ``H(x) = -sum_c q(c|x) log q(c|x)``, ``q`` the (calibrated) renormalised row.

    Examples
    --------
    >>> entropy([[0.5, 0.5], [1.0, 0.0]]).round(4)
    array([0.6931, 0.    ], dtype=float32)
    """
    P = as_tensor(proba)
    scale = None if prior is None else 1.0 / as_tensor(prior)
    H = torch.empty(len(P))
    # Row blocks keep the (n, C) temporaries small for 10^6-sample pools.
    for rows in row_blocks(len(P), 4 * P.shape[1], budget=2**24):
        q = P[rows] if scale is None else P[rows] * scale
        q = q / q.sum(1, keepdim=True).clamp_min(1e-30)
        H[rows] = torch.special.entr(q).sum(1)
    return H.numpy()


def margin(proba) -> np.ndarray:
    """Difference between the two largest probabilities of each row (small = uncertain).

    Parameters
    ----------
    proba : array-like of shape (n_samples, n_classes)
        Class probabilities, one row per sample.

    Returns
    -------
    np.ndarray of shape (n_samples,), float32
        ``p_(1) - p_(2)``, the largest minus the second largest probability; 0 for every
        sample when there is a single class.

    Examples
    --------
    >>> margin([[0.5, 0.3, 0.2], [0.9, 0.1, 0.0]]).round(4)
    array([0.2, 0.8], dtype=float32)
    """
    P = np.asarray(proba, dtype=np.float32)
    if P.shape[1] == 1:
        return np.zeros(len(P), dtype=np.float32)
    top2 = np.partition(P, P.shape[1] - 2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def least_confidence(proba) -> np.ndarray:
    """One minus the largest probability of each row.

    Parameters
    ----------
    proba : array-like of shape (n_samples, n_classes)
        Class probabilities, one row per sample.

    Returns
    -------
    np.ndarray of shape (n_samples,), float32
        ``1 - max_c p(c|x)`` (large = uncertain).

    Examples
    --------
    >>> least_confidence([[0.5, 0.3, 0.2], [0.9, 0.1, 0.0]]).round(4)
    array([0.5, 0.1], dtype=float32)
    """
    return 1.0 - np.asarray(proba, dtype=np.float32).max(axis=1)


def top_scores(scores, n_instances: int, rng) -> np.ndarray:
    """Indices of the ``n_instances`` largest ``scores``, highest first, ties broken by ``rng``.

    Parameters
    ----------
    scores : array-like of shape (n,)
        One score per sample; larger is picked first.
    n_instances : int
        How many indices to return (all ``n`` when larger).
    rng : numpy.random.RandomState
        Shuffles the samples before a stable sort, so equal scores come in random order.

    Returns
    -------
    np.ndarray of shape (min(n_instances, n),), int
        Distinct indices into ``scores``, by decreasing score.

    Examples
    --------
    >>> top_scores(np.array([0.1, 0.9, 0.5]), 2, np.random.RandomState(0))
    array([1, 2])
    """
    shuffled = rng.permutation(len(scores))
    # A stable sort of the shuffled scores keeps the random order among equal scores.
    order = np.argsort(-np.asarray(scores)[shuffled], kind="stable")[:n_instances]
    return shuffled[order]


def _uncertainty_query(score, name, sign, classifier, X_pool, n_instances, random_state,
                       return_metrics):
    # sign=-1 for scores where smaller means more uncertain (margin).
    pool, n_instances, rng = prepare(classifier, X_pool, n_instances, random_state)
    values = score(pool.proba)
    return query_result(top_scores(sign * values, n_instances, rng), {name: values}, return_metrics)


def entropy_query(classifier, X_pool, n_instances=1, *, random_state=None, return_metrics=False):
    """Query the samples whose predicted class distribution has the highest entropy.

    Parameters
    ----------
    classifier : modAL learner, ClipPromptClassifier or Pipeline ending in one
        Gives the pool's class probabilities (``predict_proba``; zero-shot before any label
        for :class:`~modal_vlm.ClipPromptClassifier`). Any scikit-learn classifier with
        ``predict_proba`` works.
    X_pool : sequence
        Unlabeled pool (paths, images, arrays...), passed to the classifier as-is.
    n_instances : int, default=1
        Number of pool samples to query (the batch size), at most ``len(X_pool)``.
    random_state : int, RandomState or None
        Breaks ties.
    return_metrics : bool, default=False
        Return ``(indices, metrics)`` even when the installed modAL expects only indices.

    Returns
    -------
    indices or (indices, metrics)
        See :ref:`strategies-return`; ``metrics["entropy"]`` holds every pool sample's score.

    Raises
    ------
    ValueError
        ``X_pool`` is empty, ``n_instances`` is not an int in ``[1, len(X_pool)]``, or
        ``predict_proba`` returns an array of the wrong shape.

    Examples
    --------
    In a modAL loop (here with a scikit-learn classifier; :func:`~modal_vlm.cec_query` shows
    one with :class:`~modal_vlm.ClipPromptClassifier`):

    >>> from modAL.models import ActiveLearner
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.arange(6.0)[:, None]
    >>> learner = ActiveLearner(estimator=LogisticRegression(), query_strategy=entropy_query,
    ...                         X_training=X[[0, 5]], y_training=[0, 1])
    >>> query_idx, query_rows = learner.query(X, n_instances=2, random_state=0)
    >>> sorted(query_idx.tolist())
    [2, 3]
    """
    return _uncertainty_query(entropy, "entropy", 1, classifier, X_pool, n_instances, random_state,
                              return_metrics)


def margin_query(classifier, X_pool, n_instances=1, *, random_state=None, return_metrics=False):
    """Query the samples with the smallest margin between their two most likely classes.

    Parameters
    ----------
    classifier : modAL learner, ClipPromptClassifier or Pipeline ending in one
        Gives the pool's class probabilities (``predict_proba``); any scikit-learn
        classifier with ``predict_proba`` works.
    X_pool : sequence
        Unlabeled pool (paths, images, arrays...), passed to the classifier as-is.
    n_instances : int, default=1
        Number of pool samples to query (the batch size), at most ``len(X_pool)``.
    random_state : int, RandomState or None
        Breaks ties.
    return_metrics : bool, default=False
        Return ``(indices, metrics)`` even when the installed modAL expects only indices.

    Returns
    -------
    indices or (indices, metrics)
        See :ref:`strategies-return`; ``metrics["margin"]`` holds every pool sample's
        margin (:func:`margin`).

    Raises
    ------
    ValueError
        ``X_pool`` is empty, ``n_instances`` is not an int in ``[1, len(X_pool)]``, or
        ``predict_proba`` returns an array of the wrong shape.

    Examples
    --------
    Any classifier with ``predict_proba`` works; the samples nearest the boundary come first:

    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.arange(6.0)[:, None]
    >>> margin_query(LogisticRegression().fit(X, [0, 0, 0, 1, 1, 1]), X, 2, random_state=0).tolist()
    [3, 2]
    """
    return _uncertainty_query(margin, "margin", -1, classifier, X_pool, n_instances, random_state,
                              return_metrics)


def least_confidence_query(classifier, X_pool, n_instances=1, *, random_state=None,
                           return_metrics=False):
    """Query the samples whose most likely class has the lowest probability.

    Parameters
    ----------
    classifier : modAL learner, ClipPromptClassifier or Pipeline ending in one
        Gives the pool's class probabilities (``predict_proba``); any scikit-learn
        classifier with ``predict_proba`` works.
    X_pool : sequence
        Unlabeled pool (paths, images, arrays...), passed to the classifier as-is.
    n_instances : int, default=1
        Number of pool samples to query (the batch size), at most ``len(X_pool)``.
    random_state : int, RandomState or None
        Breaks ties.
    return_metrics : bool, default=False
        Return ``(indices, metrics)`` even when the installed modAL expects only indices.

    Returns
    -------
    indices or (indices, metrics)
        See :ref:`strategies-return`; ``metrics["least_confidence"]`` holds every pool sample's
        score (:func:`least_confidence`).

    Raises
    ------
    ValueError
        ``X_pool`` is empty, ``n_instances`` is not an int in ``[1, len(X_pool)]``, or
        ``predict_proba`` returns an array of the wrong shape.

    Examples
    --------
    The score of three samples, then a query with a scikit-learn classifier:

    >>> proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.5, 0.5]])
    >>> least_confidence(proba).round(2)
    array([0.1, 0.4, 0.5], dtype=float32)
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.arange(6.0)[:, None]
    >>> idx, metrics = least_confidence_query(LogisticRegression().fit(X, [0, 0, 0, 1, 1, 1]), X, 2,
    ...                                       random_state=0, return_metrics=True)
    >>> sorted(idx.tolist()), metrics["least_confidence"].round(2)
    ([2, 3], array([0.06, 0.16, 0.36, 0.36, 0.16, 0.06], dtype=float32))
    """
    return _uncertainty_query(least_confidence, "least_confidence", 1, classifier, X_pool, n_instances,
                              random_state, return_metrics)
