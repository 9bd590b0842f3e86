"""Labels a person most likely got wrong, and a careless oracle to test that on.

A label is suspect when a model that did not learn from it confidently predicts another
class. Out-of-fold predictions (each label predicted by a model trained without it) are the
textbook signal (confident learning, Northcutt et al., JAIR 2021); an active-learning loop
also has a free one: every label was predicted by the model *before* it was taught. Which
signal the loop uses, and its precision and recall against injected flips, are measured in
``benchmarks/results/trust.md``. No cleanlab (AGPL): the rule is a few lines.
"""
from __future__ import annotations

import numpy as np

#: Default: flag a label when the held-out calibrated probability of the given class is
#: below this share of the probability of the predicted class (see trust.md).
DEFAULT_SUSPECT_RATIO = 0.25


def suspicion(proba, y) -> np.ndarray:
    """How strongly held-out probabilities disagree with the given labels, in [0, 1).

    ``1 - p(given class) / p(predicted class)``: 0 when the model predicts the given class,
    close to 1 when it is sure of another one.

    Parameters
    ----------
    proba : array-like of shape (n, n_classes)
        Held-out (calibrated) probabilities of the labeled images.
    y : array-like of int, shape (n,)
        The given labels, as class positions (columns of ``proba``).

    Returns
    -------
    ndarray of float64 of shape (n,)
        One score per label.

    Examples
    --------
    >>> suspicion([[0.8, 0.2], [0.3, 0.7]], [0, 0]).round(3).tolist()
    [0.0, 0.571]
    """
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y, dtype=np.intp)
    if proba.ndim != 2 or y.shape != (len(proba),):
        raise ValueError(f"proba must be (n, n_classes) and y (n,), got {proba.shape} and {y.shape}.")
    if not len(y):
        return np.zeros(0)
    given = proba[np.arange(len(y)), y]
    return 1.0 - given / np.maximum(proba.max(axis=1), 1e-300)


def suspect_order(proba, y, ratio=DEFAULT_SUSPECT_RATIO) -> np.ndarray:
    """Positions of the suspect labels, most suspect first.

    A label is suspect when ``p(given class) < ratio * p(predicted class)``, i.e. its
    :func:`suspicion` exceeds ``1 - ratio``.

    Parameters
    ----------
    proba : array-like of shape (n, n_classes)
        Held-out (calibrated) probabilities of the labeled images.
    y : array-like of int, shape (n,)
        The given labels as class positions.
    ratio : float, default=DEFAULT_SUSPECT_RATIO
        In (0, 1]: smaller flags fewer, surer suspects.

    Returns
    -------
    ndarray of int
        Positions into ``y``, by decreasing suspicion.

    Examples
    --------
    >>> suspect_order([[0.8, 0.2], [0.1, 0.9], [0.3, 0.7], [0.05, 0.95]], [0, 0, 0, 0]).tolist()
    [3, 1]
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.floating)) or not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio!r}.")
    score = suspicion(proba, y)
    flagged = np.flatnonzero(score > 1 - ratio)
    return flagged[np.argsort(-score[flagged], kind="stable")]


def flip_labels(y, rate, n_classes, random_state=None) -> np.ndarray:
    """A careless oracle: ``round(rate * n)`` labels, chosen at random, flipped to another class.

    Symmetric noise: each chosen label becomes one of the other ``n_classes - 1`` classes,
    uniformly. Seeded by ``random_state``: the same flips for every strategy of a seed.

    Parameters
    ----------
    y : array-like of int, shape (n,)
        True labels in ``range(n_classes)``.
    rate : float
        Share of labels to flip, in [0, 1).
    n_classes : int
        Number of classes (>= 2).
    random_state : int, numpy Generator or None
        Seed.

    Returns
    -------
    ndarray of int, shape (n,)
        The labels the oracle gives; ``!= y`` exactly where flipped.

    Examples
    --------
    >>> y = np.arange(20) % 4
    >>> noisy = flip_labels(y, 0.1, 4, random_state=0)
    >>> int((noisy != y).sum())
    2
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)) or not 0 <= rate < 1:
        raise ValueError(f"label noise must be a fraction in [0, 1), got {rate!r}.")
    y = np.asarray(y)
    rng = np.random.default_rng(random_state)
    noisy = y.copy()
    chosen = rng.choice(len(y), int(round(rate * len(y))), replace=False)
    shift = rng.integers(1, n_classes, len(chosen))   # 1..C-1 classes away: never the true one
    noisy[chosen] = (y[chosen] + shift) % n_classes
    return noisy


__all__ = ["DEFAULT_SUSPECT_RATIO", "flip_labels", "suspect_order", "suspicion"]
