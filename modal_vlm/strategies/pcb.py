"""PCB class balancing (Bang et al., "Active Prompt Learning in Vision Language Models",
CVPR 2024) around any base strategy."""
from __future__ import annotations

import math

import numpy as np

from ._pool import prepare
from ._result import PSEUDO_LABELED, query_result, split_result


def balance_by_pseudo_labels(candidates, pseudo_labels, class_counts, n_instances, rng) -> np.ndarray:
    """PCB's greedy pick from the base strategy's candidates.

    Repeatedly take the class with the fewest labels so far, pick a random remaining
    candidate whose pseudo-label is that class and count it; with no such candidate take a
    random remaining candidate without counting.

    Examples
    --------
    Class 1 has fewer labels, so its only candidate (pool index 12) comes first; then the
    counts tie and class 0 (the lowest index) gets a random one of its candidates:

    >>> import numpy as np
    >>> balance_by_pseudo_labels(np.array([10, 11, 12]), np.array([0, 0, 1]), np.array([1, 0]), 2,
    ...                          np.random.RandomState(0)).tolist()
    [12, 10]
    """
    candidates, pseudo_labels = np.asarray(candidates), np.asarray(pseudo_labels)
    counts = np.array(class_counts, dtype=np.int64, copy=True)
    # A shuffled stack of candidate positions per class: popping one is a uniform draw, and a
    # whole batch costs O(m + n_instances * C) instead of a scan of the candidates per pick.
    stacks = {c: list(rng.permutation(np.flatnonzero(pseudo_labels == c)))
              for c in np.unique(pseudo_labels).tolist()}
    taken = np.zeros(len(candidates), dtype=bool)
    picks = []
    for _ in range(n_instances):
        target = int(np.argmin(counts))
        stack = stacks.get(target, [])
        while stack and taken[stack[-1]]:  # drop candidates taken by a random fallback
            stack.pop()
        if stack:
            j = stack.pop()
            counts[target] += 1
        else:
            j = rng.choice(np.flatnonzero(~taken))
        taken[j] = True
        picks.append(int(candidates[j]))
    return np.asarray(picks, dtype=np.intp)


class pcb:  # noqa: N801 -- used like a function: pcb(entropy_query)
    """Wrap a base strategy with PCB class balancing.

    The base strategy proposes ``ceil(gamma * |U|)`` candidates (at least ``n_instances``);
    PCB then balances the batch over the current model's pseudo-labels, favouring the classes
    with the fewest true labels in the labeled set (the learner's ``y_training``, or
    ``y_labeled=``). Works from round 0, when every count is zero.

    Parameters
    ----------
    base : callable
        Any modAL query strategy (``modal_vlm``'s or modAL's own).
    gamma : float, default=0.1
        Fraction of the pool the base strategy proposes, in ``(0, 1]``.

    Raises
    ------
    ValueError
        ``gamma`` lies outside ``(0, 1]``.

    Notes
    -----
    The wrapped strategy is called like any modAL strategy,
    ``strategy(classifier, X_pool, n_instances=1, *, random_state=None, y_labeled=None,
    return_metrics=False, **base_params)``: ``y_labeled`` replaces the learner's
    ``y_training`` for the class counts, ``base_params`` go to the base strategy, and the
    metrics are the base strategy's plus ``"candidates"`` (its proposals). It raises the
    base strategy's errors, and ``ValueError`` for labels outside the classifier's
    ``classes_`` or a base strategy that returns pseudo-labels (:func:`~modal_vlm.strategies.cbsq_query`).

    Examples
    --------
    >>> from modal_vlm.strategies import entropy_query
    >>> strategy = pcb(entropy_query)
    >>> strategy
    pcb(entropy_query, gamma=0.1)
    >>> strategy.__name__
    'pcb_entropy_query'
    >>> import pickle
    >>> pickle.loads(pickle.dumps(strategy))
    pcb(entropy_query, gamma=0.1)

    It is then used like any strategy:
    ``ActiveLearner(estimator=clf, query_strategy=pcb(entropy_query))``.
    """

    def __init__(self, base, gamma=0.1):
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must lie in (0, 1], got {gamma}.")
        self.base, self.gamma = base, gamma
        self.__name__ = f"pcb_{getattr(base, '__name__', type(base).__name__)}"

    def __repr__(self):
        return f"pcb({getattr(self.base, '__name__', self.base)!r}, gamma={self.gamma})".replace("'", "")

    def __call__(self, classifier, X_pool, n_instances=1, *, random_state=None, y_labeled=None,
                 return_metrics=False, **base_params):
        pool, n_instances, rng = prepare(classifier, X_pool, n_instances, random_state, y_labeled=y_labeled)
        n_candidates = min(pool.n, max(n_instances, math.ceil(self.gamma * pool.n)))
        # The pool view goes to the base strategy: probabilities and embeddings are computed once.
        candidates, base_metrics = split_result(call_base(self.base, pool, X_pool, n_candidates, rng, base_params))
        if len(base_metrics.get(PSEUDO_LABELED, ())):
            raise ValueError(f"pcb cannot wrap {getattr(self.base, '__name__', self.base)}: it pseudo-labels "
                             "samples for its own batch, which PCB re-selects.")
        pseudo = pool.proba[candidates].argmax(1)
        picks = balance_by_pseudo_labels(candidates, pseudo, pool.class_counts(), n_instances, rng)
        return query_result(picks, {**base_metrics, "candidates": candidates}, return_metrics)


def call_base(strategy, pool, X_pool, n_instances, rng, params):
    """Call the strategy a wrapper (:class:`pcb`, :class:`~modal_vlm.strategies.open_set.open_set`)
    wraps: ours with the wrapper's generator and ``return_metrics=True``, modAL's own as modAL
    calls them.

    Parameters
    ----------
    strategy : callable
        The wrapped query strategy.
    pool : QueryPool
        The classifier's view of the pool (from :func:`~modal_vlm.strategies._pool.prepare`).
    X_pool : sequence
        The pool's samples.
    n_instances : int
        Samples to query.
    rng : numpy.random.RandomState
        The wrapper's generator.
    params : dict
        The strategy's own parameters.

    Returns
    -------
    object
        What the strategy returns (indices, or indices and metrics).
    """
    if _accepts_return_metrics(strategy):
        return strategy(pool, X_pool, n_instances, random_state=rng, return_metrics=True, **params)
    return strategy(pool, X_pool, n_instances=n_instances, **params)


def _accepts_return_metrics(strategy) -> bool:
    # modal_vlm's strategies take return_metrics and random_state; modAL's own do not.
    return getattr(strategy, "__module__", "").startswith("modal_vlm.") or isinstance(strategy, pcb)
