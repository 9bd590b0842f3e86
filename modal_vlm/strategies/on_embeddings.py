"""modAL strategies that need feature vectors, run on the estimator's image embeddings.

Some of modAL's strategies compute distances on ``X`` itself: ``modAL.batch``'s ranked
batch-mode sampling (``uncertainty_batch_sampling``), for instance. On image paths they fail;
on pixel arrays they would compare pixels. :func:`on_embeddings` runs such a strategy on the
estimator's L2-normalised embeddings (:meth:`~modal_vlm.ClipPromptClassifier.transform`,
from the embedding cache) instead, with probabilities from the same embeddings, and returns
pool indices as every strategy here does. :func:`ranked_batch_query` is modAL's ranked
batch-mode sampling so adapted.
"""
from __future__ import annotations

import numpy as np

from ._pool import prepare
from ._result import query_result, split_result


class EmbeddingLearner:
    """What a modAL strategy sees: a learner whose samples are embeddings.

    ``X_training`` holds the labeled set's embeddings (None before any label),
    ``predict_proba(F)`` takes embeddings; ``on_transformed`` is False.

    Parameters
    ----------
    pool : modal_vlm.strategies._pool.QueryPool
        The classifier and pool being queried.
    """

    on_transformed = False

    def __init__(self, pool):
        self.pool = pool
        self.estimator = pool.estimator
        self.features = pool.features.numpy()  #: the pool's embeddings, what the strategy gets as X
        labeled = pool.labeled_features
        self.X_training = None if labeled is None else labeled.numpy()
        self.y_training = pool.y_training

    def predict_proba(self, features, **kwargs):
        if features is self.features:
            return self.pool.proba  # computed once, from the same embeddings
        return self.pool._model.predict_proba_from_features(features)


def _distinct(indices) -> np.ndarray:
    """``indices`` without repeats, in the order of their first occurrence."""
    indices = np.asarray(indices, dtype=np.intp).reshape(-1)
    return indices[np.sort(np.unique(indices, return_index=True)[1])]


def on_embeddings(modal_strategy):
    """Wrap a modAL query strategy so that it runs on the image embeddings.

    Parameters
    ----------
    modal_strategy : callable
        ``modal_strategy(learner, X, n_instances, **params)`` of modAL's kind, reading
        ``learner.X_training`` and ``learner.predict_proba`` and computing on ``X`` as
        feature vectors.

    Returns
    -------
    callable
        A strategy ``(classifier, X_pool, n_instances=1, *, random_state=None,
        return_metrics=False, **params)`` for a learner, a ClipPromptClassifier or a
        Pipeline ending in one; it returns pool indices (``(indices, metrics)`` with
        modAL 0.4.2+ or ``return_metrics=True``; ``metrics`` is empty).
        ``random_state`` is accepted for a uniform signature and unused: modAL's
        strategies draw nothing.

    Examples
    --------
    >>> import numpy as np
    >>> from modAL.batch import uncertainty_batch_sampling
    >>> from modal_vlm import ClipPromptClassifier
    >>> strategy = on_embeddings(uncertainty_batch_sampling)
    >>> clf = ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit", verbose=0)
    >>> X = np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
    >>> picks = strategy(clf, X, n_instances=3)
    >>> len(set(picks.tolist()))
    3
    """
    def strategy(classifier, X_pool, n_instances=1, *, random_state=None, return_metrics=False, **params):
        pool, n_instances, _ = prepare(classifier, X_pool, n_instances, random_state)
        learner = EmbeddingLearner(pool)
        indices, _ = split_result(modal_strategy(learner, learner.features, n_instances=n_instances, **params))
        indices = _distinct(indices)
        if len(indices) < n_instances:
            # modAL's ranked batch never masks its cold-start pick, so on a pool of duplicates
            # (burst photos, copied files) it picks that sample again: the rest of the batch
            # is ranked with the distinct picks as if labeled, among the samples not picked.
            rest = np.setdiff1d(np.arange(pool.n), indices)
            picked = learner.features[indices]
            learner.X_training = picked if learner.X_training is None else np.vstack([learner.X_training, picked])
            more, _ = split_result(modal_strategy(learner, learner.features[rest],
                                                  n_instances=n_instances - len(indices), **params))
            indices = np.concatenate([indices, rest[_distinct(more)]])
        return query_result(indices, {}, return_metrics)

    strategy.__name__ = strategy.__qualname__ = f"{modal_strategy.__name__}_on_embeddings"
    strategy.__doc__ = f"modAL's ``{modal_strategy.__name__}`` on the image embeddings (see ``on_embeddings``)."
    return strategy


def ranked_batch_query(classifier, X_pool, n_instances=1, *, random_state=None, metric="euclidean",
                       return_metrics=False):
    """Ranked batch-mode sampling (Cardoso et al., 2017): modAL's, on the image embeddings.

    modAL's ``uncertainty_batch_sampling`` picks, one after the other, the pool sample that
    best balances least-confidence uncertainty and distance to the labeled set and the
    samples picked so far, here in the embedding space. Before any label modAL starts from
    the sample with the smallest mean distance to the pool, computing all pool-to-pool
    distances (an ``n x n`` matrix: about 0.8 GB for 10,000 images); with labels the
    distances are pool-to-labeled only.

    Parameters
    ----------
    classifier : modAL learner, ClipPromptClassifier or Pipeline ending in one
        Its ``transform`` gives the embeddings; a learner's ``X_training`` is the labeled set.
    X_pool : sequence
        Unlabeled pool.
    n_instances : int, default=1
        Number of pool samples to query, at most ``len(X_pool)``.
    random_state : int, RandomState or None
        Unused (the strategy is deterministic); accepted like every strategy's.
    metric : str or callable, default="euclidean"
        Distance of ``sklearn.metrics.pairwise_distances``.
    return_metrics : bool, default=False
        Return ``(indices, {})`` whatever the modAL version.

    Returns
    -------
    ndarray of int or tuple
        Pool indices in the order picked (see :mod:`modal_vlm.strategies` for the
        modAL-version convention).

    Examples
    --------
    >>> import numpy as np
    >>> from modal_vlm import ClipPromptClassifier
    >>> clf = ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit", verbose=0)
    >>> X = np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
    >>> ranked_batch_query(clf, X, n_instances=2).shape
    (2,)
    """
    from modAL.batch import uncertainty_batch_sampling

    return on_embeddings(uncertainty_batch_sampling)(classifier, X_pool, n_instances, random_state=random_state,
                                                     metric=metric, return_metrics=return_metrics)
