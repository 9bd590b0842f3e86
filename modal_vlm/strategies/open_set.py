"""Open-set-aware selection: spend the labeling budget on images of the classes, not on junk.

Real folders hold images of none of the classes (screenshots, blurred shots, other objects).
To an uncertainty-driven strategy they look like the best picks: the model is unsure of them.
A person answers "none of these classes" (:data:`modal_vlm.NONE`), and that answer is the
evidence used here: for every pool image, the probability that it is of none of the classes,

.. math::

    p_{none}(x) = \\frac{\\sum_{j \\in N} K(x, x_j)}
    {\\sum_{j \\in N} K(x, x_j) + \\sum_{j \\in L \\setminus N} K(x, x_j)},
    \\qquad K(x, x') = \\exp\\big((\\cos(f(x), f(x')) - 1) / \\tau\\big),

over the labeled set ``L`` and its images marked none ``N``: a kernel density estimate of each
kind of mark, weighted by how often it was given (Bayes' rule with the labeled set's share of
"none" answers as the prior). Close to an image marked none and far from every image of a
class, ``p_none`` is near 1; before the first "none" answer it is 0 everywhere, so on a pool
without junk the selection is exactly what it was.

* :func:`cec_query` multiplies its uncertainty ``U(x)`` by ``1 - p_none(x)`` (``open_set=True``);
* :class:`open_set` wraps any strategy (like :class:`~modal_vlm.pcb`): the base strategy sees
  only the pool images with ``p_none < threshold``.

Measured in ``benchmarks/results/open_set.md``.
"""
from __future__ import annotations

import numpy as np
import torch

from ..embeddings.disk import as_tensor
from ._linalg import row_blocks
from ._pool import prepare, take_rows
from ._result import query_result, split_result
from .pcb import call_base

#: ``tau`` of the kernel: cosine similarities are scaled by ``1 / tau`` (see the module docstring).
BANDWIDTH = 0.05
#: :class:`open_set` hides the pool images at or above this ``p_none`` from the base strategy.
THRESHOLD = 0.5


def none_probability(features, labeled_features, labeled_none, bandwidth=BANDWIDTH) -> np.ndarray:
    """``p_none(x)`` of every pool image from the labeled set's "none" marks.

    Parameters
    ----------
    features : array-like of shape (n, d)
        Embeddings of the pool.
    labeled_features : array-like of shape (L, d) or None
        Embeddings of the labeled set.
    labeled_none : array-like of bool of shape (L,)
        Which labeled images were marked :data:`~modal_vlm.NONE`.
    bandwidth : float, default=0.05
        ``tau`` of the kernel ``exp((cos - 1) / tau)``: small values trust the nearest mark,
        large ones average over many.

    Returns
    -------
    np.ndarray of shape (n,), float32
        Values in ``[0, 1]``; zeros when nothing is marked none. When every label is
        "none" there is no class to compare with: ``p_none`` is then the kernel to the
        nearest mark alone (1 for a marked image, ``1/e`` at a cosine of ``1 - tau``).

    Examples
    --------
    >>> import numpy as np
    >>> F = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    >>> none_probability(F, F[:2], np.array([True, False])).round(2)
    array([1. , 0. , 0.5], dtype=float32)
    """
    n = len(features)
    labeled_none = np.asarray(labeled_none, dtype=bool)
    if labeled_features is None or not labeled_none.any():
        return np.zeros(n, dtype=np.float32)
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth!r}.")
    marks = torch.nn.functional.normalize(as_tensor(labeled_features).float(), dim=1)
    is_none = torch.as_tensor(labeled_none)
    result = np.empty(n, dtype=np.float32)
    for rows in row_blocks(n, len(marks)):
        F = torch.nn.functional.normalize(as_tensor(features[rows]).float(), dim=1)
        logits = (F @ marks.T - 1.0) / bandwidth
        if bool(is_none.all()):
            result[rows] = torch.exp(logits.max(dim=1).values).numpy()
            continue
        none = torch.logsumexp(logits[:, is_none], dim=1)
        known = torch.logsumexp(logits[:, ~is_none], dim=1)
        result[rows] = torch.sigmoid(none - known).numpy()
    return result


def pool_none_probability(pool, bandwidth=BANDWIDTH) -> np.ndarray:
    """:func:`none_probability` of a :class:`~modal_vlm.strategies._pool.QueryPool`'s pool
    from its labeled set (zeros before any "none" answer, without computing embeddings of
    the labeled set)."""
    if not pool.labeled_none.any():
        return np.zeros(pool.n, dtype=np.float32)
    return none_probability(pool.features, pool.labeled_features, pool.labeled_none, bandwidth)


class open_set:  # noqa: N801 -- used like a function: open_set(entropy_query)
    """Wrap a base strategy so that it does not spend the budget on images like those
    marked "none of these classes".

    The base strategy sees only the pool images whose :func:`none_probability` is below
    ``threshold`` (at least ``n_instances`` of them: the least likely junk completes the
    set); its picks are mapped back to the whole pool. Before the first
    :data:`~modal_vlm.NONE` label it sees the whole pool and picks exactly as alone.

    Parameters
    ----------
    base : callable
        Any modAL query strategy (``modal_vlm``'s, a :class:`~modal_vlm.pcb` wrapper, or
        modAL's own).
    threshold : float, default=0.5
        Pool images with ``p_none >= threshold`` are hidden from the base strategy; in
        ``(0, 1]``.
    bandwidth : float, default=0.05
        The kernel's ``tau`` (see :func:`none_probability`).

    Raises
    ------
    ValueError
        ``threshold`` outside ``(0, 1]`` or ``bandwidth <= 0``.

    Notes
    -----
    Called like any modAL strategy, ``strategy(classifier, X_pool, n_instances=1, *,
    random_state=None, return_metrics=False, **base_params)``; the metrics are the base
    strategy's (per-sample ones are NaN for the hidden images), plus ``"none_probability"``
    of every pool image. Pseudo-labels of a base strategy (CB+SQ) are mapped back too.

    Examples
    --------
    >>> from modal_vlm.strategies import entropy_query
    >>> strategy = open_set(entropy_query)
    >>> strategy
    open_set(entropy_query, threshold=0.5)
    >>> strategy.__name__
    'open_set_entropy_query'

    Used like any strategy: ``ActiveLearner(estimator=clf, query_strategy=open_set(entropy_query))``;
    teach the images a person marks none with ``modal_vlm.NONE``.
    """

    def __init__(self, base, threshold=THRESHOLD, bandwidth=BANDWIDTH):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must lie in (0, 1], got {threshold}.")
        if not bandwidth > 0:
            raise ValueError(f"bandwidth must be > 0, got {bandwidth!r}.")
        self.base, self.threshold, self.bandwidth = base, threshold, bandwidth
        self.__name__ = f"open_set_{getattr(base, '__name__', type(base).__name__)}"

    def __repr__(self):
        extra = "" if self.bandwidth == BANDWIDTH else f", bandwidth={self.bandwidth}"
        return f"open_set({getattr(self.base, '__name__', self.base)!r}, threshold={self.threshold}{extra})" \
            .replace("'", "")

    def __call__(self, classifier, X_pool, n_instances=1, *, random_state=None, return_metrics=False,
                 **base_params):
        pool, n_instances, rng = prepare(classifier, X_pool, n_instances, random_state)
        p_none = pool_none_probability(pool, self.bandwidth)
        order = np.argsort(p_none, kind="stable")
        n_visible = max(n_instances, int(np.sum(p_none < self.threshold)))
        visible = np.sort(order[:n_visible])
        if n_visible == pool.n:
            result = call_base(self.base, pool, X_pool, n_instances, rng, base_params)
            picks, metrics = split_result(result)
            return query_result(picks, {**metrics, "none_probability": p_none}, return_metrics)
        sub_pool = pool.subset(visible, take_rows(X_pool, visible))
        picks, metrics = split_result(call_base(self.base, sub_pool, sub_pool.X_pool, n_instances, rng, base_params))
        return query_result(visible[picks], {**_expand(metrics, visible, pool.n), "none_probability": p_none},
                            return_metrics)


def _expand(metrics, visible, n) -> dict:
    """The base strategy's metrics over the whole pool: per-sample arrays get NaN rows for the
    hidden images; positions (pseudo-labeled, candidates) are mapped back."""
    from ._result import PSEUDO_LABELED

    expanded = {}
    for key, value in metrics.items():
        if key in (PSEUDO_LABELED, "candidates"):
            expanded[key] = visible[np.asarray(value, dtype=np.intp)]
        elif isinstance(value, np.ndarray) and value.ndim >= 1 and len(value) == len(visible):
            full = np.full((n, *value.shape[1:]), np.nan, dtype=np.result_type(value.dtype, np.float32))
            full[visible] = value
            expanded[key] = full
        else:
            expanded[key] = value
    return expanded
