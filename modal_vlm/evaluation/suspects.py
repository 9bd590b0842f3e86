"""Labels a person most likely got wrong, and a careless oracle to test that on.

A label is suspect when models that can judge it confidently predict another class.
Out-of-fold predictions (each label predicted by a model trained without it) are the textbook
signal (confident learning, Northcutt et al., JAIR 2021); an active-learning loop has free
opinions instead:

* the *held-out* one: every label was predicted by the model before it was taught;
* the *current* model's, which has learned the label: a network fits right labels before
  wrong ones (Arpit et al., ICML 2017), so a label it still rejects is more suspect than one
  it merely doubted before;
* the *zero-shot* model's, which no label shaped (a person's slips cannot have taught it).

The rule takes the geometric mean of the opinions' ratios ``p(given) / p(predicted)``. Which
opinions, their precision and recall against injected flips and the default threshold are
measured in ``benchmarks/results/trust.md``. No cleanlab (AGPL): the rule is a few lines.
"""
from __future__ import annotations

import numpy as np

#: Default: flag a label when the geometric mean of its opinions' ratios (the calibrated
#: probability of the given class over that of the predicted class) is below this: the
#: threshold whose precision and recall against injected slips have the larger minimum
#: (``benchmarks/results/trust.md``, the suspect-label table).
DEFAULT_SUSPECT_RATIO = 0.3


def _given_ratio(proba, y, name):
    """``p(given class) / p(predicted class)`` row by row; NaN where a row holds NaN."""
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or y.shape != (len(proba),):
        raise ValueError(f"{name} must be (n, n_classes) and y (n,), got {proba.shape} and {y.shape}.")
    given = proba[np.arange(len(y)), y]
    return given / np.maximum(proba.max(axis=1), 1e-300)


def suspicion(proba, y, others=()) -> np.ndarray:
    """How strongly the models disagree with the given labels, in [0, 1).

    ``1 - p(given class) / p(predicted class)`` of the held-out probabilities: 0 when the
    model predicts the given class, close to 1 when it is sure of another one. With
    ``others``, the ratio is the geometric mean of the held-out one and theirs (see the
    module docstring).

    Parameters
    ----------
    proba : array-like of shape (n, n_classes)
        Held-out (calibrated) probabilities of the labeled images.
    y : array-like of int, shape (n,)
        The given labels, as class positions (columns of ``proba``).
    others : sequence of array-like of shape (n, n_classes), optional
        Other models' (calibrated) probabilities of the same images, e.g. the current
        model's and the zero-shot model's; a row of NaN where a model did not score an image
        (the label's mean is then over the opinions it has).

    Returns
    -------
    ndarray of float64 of shape (n,)
        One score per label.

    Examples
    --------
    >>> suspicion([[0.8, 0.2], [0.3, 0.7]], [0, 0]).round(3).tolist()
    [0.0, 0.571]
    >>> suspicion([[0.8, 0.2], [0.3, 0.7]], [0, 0], others=[[[0.9, 0.1], [0.6, 0.4]]]).round(3).tolist()
    [0.0, 0.345]
    """
    y = np.asarray(y, dtype=np.intp)
    log_ratio = np.log(np.maximum(_given_ratio(proba, y, "proba"), 1e-300))
    count = np.ones(len(y))
    for k, other in enumerate(others):
        now = _given_ratio(other, y, f"others[{k}]")
        known = np.isfinite(now)
        log_ratio[known] += np.log(np.maximum(now[known], 1e-300))
        count += known
    return 1.0 - np.exp(log_ratio / count)


def suspect_order(proba, y, ratio=DEFAULT_SUSPECT_RATIO, others=()) -> np.ndarray:
    """Positions of the suspect labels, most suspect first.

    A label is suspect when its :func:`suspicion` exceeds ``1 - ratio``: without ``others``,
    when ``p(given class) < ratio * p(predicted class)``.

    Parameters
    ----------
    proba : array-like of shape (n, n_classes)
        Held-out (calibrated) probabilities of the labeled images.
    y : array-like of int, shape (n,)
        The given labels as class positions.
    ratio : float, default=DEFAULT_SUSPECT_RATIO
        In (0, 1]: smaller flags fewer, surer suspects.
    others : sequence of array-like of shape (n, n_classes), optional
        See :func:`suspicion`.

    Returns
    -------
    ndarray of int
        Positions into ``y``, by decreasing suspicion.

    Examples
    --------
    >>> suspect_order([[0.8, 0.2], [0.1, 0.9], [0.3, 0.7], [0.05, 0.95]], [0, 0, 0, 0], ratio=0.25).tolist()
    [3, 1]
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.floating)) or not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio!r}.")
    score = suspicion(proba, y, others)
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
