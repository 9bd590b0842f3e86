"""Coreset (Sener & Savarese, ICLR 2018): k-center greedy on the image embeddings."""
from __future__ import annotations

import numpy as np
import torch

from ..embeddings.disk import as_matrix, as_tensor
from ._linalg import matvec, nearest_centers, squared_norms
from ._pool import prepare
from ._result import query_result


def k_center_greedy(features, n_instances, rng, labeled_features=None) -> tuple[np.ndarray, np.ndarray]:
    """Greedily add the pool sample farthest from every center chosen so far.

    Centers start as the labeled samples; with none, the first center is a seeded random
    pool sample. Distances are Euclidean, computed without any ``n x n`` matrix.

    Parameters
    ----------
    features : array-like of shape (n, d)
        Embeddings of the unlabeled pool.
    n_instances : int
        Number of centers to add (at most ``n``).
    rng : numpy.random.RandomState
        Draws the first center when there is no labeled sample.
    labeled_features : array-like of shape (m, d), optional
        Embeddings of the labeled set, the initial centers; None or empty for none.

    Returns
    -------
    picks : np.ndarray of shape (n_instances,)
        Distinct pool indices, in the order they were chosen.
    distance : np.ndarray of shape (n,)
        Each pool sample's distance to the labeled set before the query (inf without labels).

    Examples
    --------
    >>> import numpy as np
    >>> F = np.array([[0.0], [1.0], [2.0], [10.0]])
    >>> k_center_greedy(F, 2, np.random.RandomState(0), labeled_features=np.array([[0.0]]))[0]
    array([3, 2])
    """
    F = as_matrix(features)
    sq_norms = squared_norms(F)
    if labeled_features is not None and len(labeled_features):
        min_sq = nearest_centers(F, as_tensor(labeled_features))[1][:, 0]
    else:
        min_sq = torch.full((len(F),), float("inf"))
    before = min_sq.sqrt().numpy().copy()
    picks = []
    for _ in range(n_instances):
        if torch.isinf(min_sq).all():
            pick = int(rng.randint(len(F)))
        else:
            pick = int(torch.argmax(min_sq))
        picks.append(pick)
        # ||x||^2 + ||c||^2 - 2 x.c: a matrix-vector product, no (n, d) temporary.
        sq = (sq_norms + sq_norms[pick] - 2.0 * matvec(F, F[pick])).clamp_min(0.0)
        min_sq = torch.minimum(min_sq, sq)
        min_sq[pick] = -1.0  # never again, even among duplicates
    return np.asarray(picks, dtype=np.intp), before


def coreset_query(classifier, X_pool, n_instances=1, *, random_state=None, X_labeled=None,
                  return_metrics=False):
    """Coreset query: k-center greedy from the labeled set in the embedding space.

    Parameters
    ----------
    classifier : modAL learner, ClipPromptClassifier or Pipeline ending in one
        Its ``transform`` gives the embeddings; a learner's ``X_training`` is the labeled set.
    X_pool : sequence
        Unlabeled pool.
    n_instances : int, default=1
        Number of pool samples to query (the batch size), at most ``len(X_pool)``.
    random_state : int, RandomState or None
        Seeds the first center when nothing is labeled yet.
    X_labeled : sequence, optional
        Labeled images, instead of the learner's.
    return_metrics : bool, default=False
        Return ``(indices, metrics)`` whatever the installed modAL expects.

    Returns
    -------
    indices or (indices, metrics)
        See :ref:`strategies-return`; ``metrics["distance"]``: each pool sample's distance to
        the labeled set (inf when nothing is labeled).

    Raises
    ------
    ValueError
        ``X_pool`` is empty or ``n_instances`` is not an int in ``[1, len(X_pool)]``.
    TypeError
        The classifier has no ``transform`` (coreset needs image embeddings).

    Examples
    --------
    The first pick is the pool sample farthest from the labeled ones:

    >>> import numpy as np
    >>> from modal_vlm import ClipPromptClassifier
    >>> images = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    >>> idx, metrics = coreset_query(ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit", verbose=0),
    ...                              images[2:], 3, X_labeled=images[:2], random_state=0,
    ...                              return_metrics=True)
    >>> bool(metrics["distance"][idx[0]] == metrics["distance"].max())
    True
    """
    pool, n_instances, rng = prepare(classifier, X_pool, n_instances, random_state, X_labeled=X_labeled)
    picks, distance = k_center_greedy(pool.features, n_instances, rng, pool.labeled_features)
    return query_result(picks, {"distance": distance}, return_metrics)
