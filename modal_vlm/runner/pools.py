"""Realistic pools for experiments: images of none of the classes, and long tails.

Real folders are not balanced: they hold images of none of the classes (screenshots, blurred
shots, other objects) and a few common classes beside rare ones. Two functions make such pools
from labeled data, for :func:`~modal_vlm.runner.load_run_data` (``none_data``, ``long_tail``)
and the benchmarks (``benchmarks/bench_open_set.py``):

* :func:`with_none_images`: add images of none of the classes, labeled
  :data:`modal_vlm.NONE`: the simulated oracle answers "none of these classes" for them, and
  each such answer costs one label of the budget;
* :func:`long_tailed`: keep a subset whose class counts decay by a constant factor (e.g.
  200 images of the first class down to 2 of the last).

>>> import numpy as np
>>> long_tail_counts(200, 3, 100).tolist()
[200, 20, 2]
"""
from __future__ import annotations

import numbers

import numpy as np
from sklearn.utils import check_random_state

from ..sentinels import NONE


def long_tail_counts(n_max, n_classes, imbalance) -> np.ndarray:
    """Images per class of a long tail: ``n_max * imbalance ** (-i / (n_classes - 1))`` for the
    ``i``-th class, rounded, at least 1.

    Parameters
    ----------
    n_max : int
        Images of the most common class.
    n_classes : int
        Number of classes.
    imbalance : float
        Ratio of the most common class's count to the rarest's, >= 1.

    Returns
    -------
    np.ndarray of int, shape (n_classes,)
        Counts, from the most common class to the rarest.

    Examples
    --------
    >>> long_tail_counts(200, 10, 100).tolist()
    [200, 120, 72, 43, 26, 15, 9, 6, 3, 2]
    """
    check_imbalance(imbalance)
    if n_classes == 1:
        return np.array([int(n_max)])
    counts = np.rint(n_max * float(imbalance) ** (-np.arange(n_classes) / (n_classes - 1)))
    return np.maximum(counts, 1).astype(np.int64)


def check_imbalance(imbalance) -> None:
    """Raise ``ValueError`` unless ``imbalance`` is a number >= 1 (not a bool).

    Parameters
    ----------
    imbalance : object
        The ``long_tail`` setting: the ratio of the most common class's count to the rarest's.

    Raises
    ------
    ValueError
        ``imbalance`` is not a number >= 1.
    """
    if isinstance(imbalance, bool) or not isinstance(imbalance, numbers.Real) or not imbalance >= 1:
        raise ValueError(f"long_tail (the imbalance ratio) must be a number >= 1, got {imbalance!r}.")


def long_tailed(y, imbalance, order=None, random_state=None) -> np.ndarray:
    """Positions of a long-tailed subset of a labeled set.

    The ``i``-th class of ``order`` keeps ``long_tail_counts(n_max, C, imbalance)[i]`` of its
    samples, ``n_max`` being the smallest class's size (so that every class has enough).

    Parameters
    ----------
    y : array-like of int, shape (n_samples,)
        Class indices (samples labeled :data:`~modal_vlm.NONE` are left out).
    imbalance : float
        Ratio of the most common class's count to the rarest's, >= 1.
    order : sequence of int, optional
        The classes from most common to rarest; default: in index order.
    random_state : int, RandomState or None
        None keeps the first samples of each class; a seed draws them at random.

    Returns
    -------
    np.ndarray of int
        Sorted positions into ``y``.

    Raises
    ------
    ValueError
        ``imbalance < 1``, or ``order`` is not a permutation of the classes of ``y``.

    Examples
    --------
    >>> long_tailed([0, 0, 0, 1, 1, 1], imbalance=3).tolist()
    [0, 1, 2, 3]
    """
    check_imbalance(imbalance)
    y = np.asarray(y)
    classes = np.unique(y[y >= 0])
    order = classes if order is None else np.asarray(order)
    if sorted(order.tolist()) != classes.tolist():
        raise ValueError(f"order must list each class of y once ({classes.tolist()}), got {order.tolist()}.")
    members = [np.flatnonzero(y == c) for c in order]
    counts = long_tail_counts(min(len(m) for m in members), len(order), imbalance)
    rng = None if random_state is None else check_random_state(random_state)
    kept = [m[:n] if rng is None else np.sort(rng.choice(m, n, replace=False)) for m, n in zip(members, counts)]
    return np.sort(np.concatenate(kept))


def with_none_images(X, y, X_none):
    """A pool of ``X`` (labels ``y``) followed by ``X_none``, labeled :data:`~modal_vlm.NONE`.

    Parameters
    ----------
    X : np.ndarray or list
        Images of the classes (paths, arrays...).
    y : array-like of int
        Their class indices.
    X_none : np.ndarray or list
        Images of none of the classes, of the same kind as ``X``.

    Returns
    -------
    X_pool : np.ndarray or list
        ``X`` then ``X_none`` (an array if both are arrays).
    y_pool : np.ndarray of int64
        ``y`` then :data:`~modal_vlm.NONE` for each of ``X_none``.

    Examples
    --------
    >>> X, y = with_none_images(np.array(["a.png"]), [0], np.array(["junk.png"]))
    >>> X.tolist(), y.tolist()
    (['a.png', 'junk.png'], [0, -2])
    """
    y_pool = np.concatenate([np.asarray(y, dtype=np.int64), np.full(len(X_none), NONE, dtype=np.int64)])
    if isinstance(X, np.ndarray) and isinstance(X_none, np.ndarray):
        return np.concatenate([X, X_none]), y_pool
    return list(X) + list(X_none), y_pool
