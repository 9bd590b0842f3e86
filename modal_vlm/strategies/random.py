"""Uniform random sampling: the baseline every strategy must beat."""
from __future__ import annotations

from ._pool import prepare
from ._result import query_result


def random_query(classifier, X_pool, n_instances=1, *, random_state=None, return_metrics=False):
    """Query ``n_instances`` distinct pool samples uniformly at random.

    The classifier is never called, so this costs nothing but the draw.

    Parameters
    ----------
    classifier : modAL learner, estimator or Pipeline
        Unused; present for modAL's strategy signature.
    X_pool : sequence
        Unlabeled pool; only its length is read.
    n_instances : int, default=1
        Number of pool samples to query (the batch size), at most ``len(X_pool)``.
    random_state : int, RandomState or None
        Seeds the draw.
    return_metrics : bool, default=False
        Return ``(indices, {})`` even when the installed modAL expects only indices.

    Returns
    -------
    indices or (indices, metrics)
        See :ref:`strategies-return`; the metrics dict is empty.

    Raises
    ------
    ValueError
        ``X_pool`` is empty or ``n_instances`` is not an int in ``[1, len(X_pool)]``.

    Examples
    --------
    >>> random_query(None, list("abcdef"), 3, random_state=0, return_metrics=True)
    (array([5, 2, 1]), {})
    """
    pool, n_instances, rng = prepare(classifier, X_pool, n_instances, random_state)
    return query_result(rng.choice(pool.n, n_instances, replace=False), {}, return_metrics)
