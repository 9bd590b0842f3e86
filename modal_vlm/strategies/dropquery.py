"""DropQuery (Gupte, Aklilu, Nirschl & Yeung-Levy, "Revisiting Active Learning in the Era of
Vision Foundation Models", TMLR 2024): uncertainty from dropout on the embeddings, diversity
from clustering the uncertain samples.

The rules are the authors' (``sanketx/AL-foundation-models``: ``query_strategies/dropout.py``,
``init_strategies/centroid_init.py``, ``clustering/kmeans.py``, ``conf/al_train.yaml``):

1. **Centroid start.** With no label, k-means of the L2-normalised embeddings into ``b``
   clusters and the sample nearest each centroid.
2. **Dropout disagreement.** The classifier predicts each sample ``3`` more times from its
   embedding with dropout ``p = 0.75`` (each entry zeroed with probability ``p``, the rest
   scaled by ``1 / (1 - p)``); a sample's count is how many of those predictions differ from
   its plain prediction.
3. **Candidates.** The samples whose count exceeds ``3 // 2 = 1``; while fewer than
   ``25 b`` samples qualify, the threshold falls by one (down to 0: any disagreement).
4. **Clustering.** k-means of the candidates' normalised embeddings into ``b`` clusters and
   the candidate nearest each centroid. With fewer than ``b`` candidates, all of them and
   random other samples.

Here the classifier's ``predict_proba_from_features`` plays the authors' linear head on the
frozen embeddings. k-means is :func:`~._kmeans.weighted_kmeans` (k-means++ seeds, faiss's
Lloyd iterations, seeded by ``random_state``; a sample of ``kmeans_subsample`` above that
size), and a centroid whose nearest sample is taken gives its nearest untaken one; a batch
short of ``b`` (k-means on duplicates) is completed by the highest counts.
scikit-activeml's ``DropQuery`` (1.0) fixes the threshold at half the predictions, pads the
candidates to ``b`` by count, clusters unnormalised inputs and has no centroid start;
``tests/strategies/test_reference.py`` checks that both pick the same samples where their
candidates agree.
"""
from __future__ import annotations

import numpy as np
import torch

from ._kmeans import kmeans_on_pool
from ._linalg import pool_blocks, unit_rows
from .._validation import check_int, check_number
from ._pool import prepare
from ._result import query_result
from .cec import KMEANS_SUBSAMPLE, _centroid_picks

#: The authors' dropout probability on the embeddings.
DROPOUT = 0.75
#: The authors' dropout predictions per sample.
N_DROPOUT = 3
#: Candidates sought per pick before the threshold falls.
CANDIDATES_PER_QUERY = 25


def dropout_disagreement(pool, rng, dropout=DROPOUT, n_dropout=N_DROPOUT) -> np.ndarray:
    """How many of ``n_dropout`` predictions from dropped-out embeddings differ from the plain one.

    Parameters
    ----------
    pool : modal_vlm.strategies._pool.QueryPool
        The classifier (with ``predict_proba_from_features``) and pool.
    rng : numpy.random.RandomState
        Seeds the dropout masks.
    dropout : float, default=0.75
        Probability of zeroing each entry of an embedding, in ``[0, 1)``.
    n_dropout : int, default=3
        Dropout predictions per sample.

    Returns
    -------
    np.ndarray of shape (n,), int
        Each sample's number of dropout predictions that differ from its plain prediction.
    """
    plain = np.empty(pool.n, dtype=np.int64)
    for rows, P in pool.proba_blocks():
        plain[rows] = P.argmax(1).numpy()
    generator = torch.Generator().manual_seed(int(rng.randint(2**31)))
    count = np.zeros(pool.n, dtype=np.int64)
    features = pool.features
    for rows in pool_blocks(features):
        block = features[rows]
        for _ in range(n_dropout):
            keep = torch.rand(block.shape, generator=generator) >= dropout
            dropped = block * keep / (1.0 - dropout)
            count[rows] += pool._proba_from_features(dropped, len(block)).argmax(1) != plain[rows]
    return count


def _centroid_start(F, n_instances, rng, kmeans_subsample):
    centers, cluster = kmeans_on_pool(F, n_instances, rng, subsample=kmeans_subsample)
    counts = np.bincount(cluster, minlength=len(centers))
    return _centroid_picks(F, centers, counts, np.zeros(len(F), dtype=np.float32), n_instances, rng)


def dropquery_select(pool, n_instances, rng, *, dropout=DROPOUT, n_dropout=N_DROPOUT,
                     candidates_per_query=CANDIDATES_PER_QUERY, centroid_start=True,
                     kmeans_subsample=KMEANS_SUBSAMPLE):
    """DropQuery's picks for a :class:`~._pool.QueryPool`: ``(indices, counts, threshold)``.

    Parameters
    ----------
    pool : modal_vlm.strategies._pool.QueryPool
        The classifier (with ``predict_proba_from_features``), pool and labeled set.
    n_instances : int
        Batch size ``b``.
    rng : numpy.random.RandomState
        Seeds the dropout masks, k-means and the random fill.
    dropout : float, default=0.75
        Dropout probability on the embedding entries.
    n_dropout : int, default=3
        Dropout predictions per sample.
    candidates_per_query : int, default=25
        The threshold falls while fewer than this many candidates per pick qualify.
    centroid_start : bool, default=True
        With no label, the centroid start.
    kmeans_subsample : int or None, default=20000
        k-means sample size on larger sets.

    Returns
    -------
    indices : np.ndarray of shape (n_instances,)
        Distinct pool indices.
    counts : np.ndarray of shape (n,)
        Each sample's disagreement count (zero at a centroid start).
    threshold : int or None
        The count a candidate exceeded (None at a centroid start).
    """
    F = unit_rows(pool.features)
    if centroid_start and pool.n_labeled == 0:
        return _centroid_start(F, n_instances, rng, kmeans_subsample), np.zeros(pool.n, dtype=np.int64), None
    count = dropout_disagreement(pool, rng, dropout, n_dropout)
    threshold = n_dropout // 2
    while (count > threshold).sum() < candidates_per_query * n_instances and threshold > 0:
        threshold -= 1
    candidates = np.flatnonzero(count > threshold)
    if len(candidates) < n_instances:
        others = np.setdiff1d(np.arange(pool.n), candidates)
        extra = rng.choice(others, n_instances - len(candidates), replace=False)
        return np.concatenate([candidates, extra]).astype(np.intp), count, threshold
    Fc = F[torch.as_tensor(candidates)]
    centers, cluster = kmeans_on_pool(Fc, n_instances, rng, subsample=kmeans_subsample)
    counts = np.bincount(cluster, minlength=len(centers))
    picks = _centroid_picks(Fc, centers, counts, count[candidates].astype(np.float32), n_instances, rng)
    return candidates[picks], count, threshold


def dropquery_query(classifier, X_pool, n_instances=1, *, random_state=None, dropout=DROPOUT, n_dropout=N_DROPOUT,
                    candidates_per_query=CANDIDATES_PER_QUERY, centroid_start=True,
                    kmeans_subsample=KMEANS_SUBSAMPLE, return_metrics=False):
    """DropQuery query: cluster the samples whose prediction flips under embedding dropout.

    Parameters
    ----------
    classifier : modAL learner, ClipPromptClassifier or Pipeline ending in one
        Gives the embeddings and predicts from them (``predict_proba_from_features``).
    X_pool : sequence
        Unlabeled pool.
    n_instances : int, default=1
        Batch size ``b``, at most ``len(X_pool)``.
    random_state : int, RandomState or None
        Seeds the dropout masks, k-means and the random fill.
    dropout : float, default=0.75
        Dropout probability on the embedding entries (the authors' 0.75), in ``[0, 1)``.
    n_dropout : int, default=3
        Dropout predictions per sample (the authors' 3).
    candidates_per_query : int, default=25
        The threshold falls while fewer than this many candidates per pick qualify.
    centroid_start : bool, default=True
        With no label, the authors' centroid start; False uses the zero-shot model's
        dropout disagreement from round 0.
    kmeans_subsample : int or None, default=20000
        k-means sample size on larger sets; None: all.
    return_metrics : bool, default=False
        Return ``(indices, metrics)`` whatever the installed modAL expects.

    Returns
    -------
    indices or (indices, metrics)
        See :ref:`strategies-return`; ``metrics["disagreement"]`` (each sample's share of
        dropout predictions that differ, zero at a centroid start) and
        ``metrics["threshold"]`` (the count a candidate exceeded; None at a centroid start).

    Raises
    ------
    ValueError
        ``X_pool`` is empty, ``n_instances`` is not an int in ``[1, len(X_pool)]``,
        ``dropout`` lies outside ``[0, 1)``, or ``n_dropout`` / ``candidates_per_query`` < 1.
    TypeError
        The classifier has no ``transform`` or no ``predict_proba_from_features``.

    Examples
    --------
    >>> import numpy as np
    >>> from modAL.models import ActiveLearner
    >>> from modal_vlm import ClipPromptClassifier
    >>> images = np.random.default_rng(0).integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    >>> clf = ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit", max_epochs=1, verbose=0)
    >>> learner = ActiveLearner(estimator=clf, X_training=images[:4], y_training=[0, 1, 0, 1])
    >>> idx, metrics = dropquery_query(learner, images[4:], 3, random_state=0, return_metrics=True)
    >>> len(set(idx.tolist())), metrics["disagreement"].shape
    (3, (26,))
    """
    check_number("dropout", dropout, 0.0, 1.0, closed_low=True)
    check_int("n_dropout", n_dropout)
    check_int("candidates_per_query", candidates_per_query)
    pool, n_instances, rng = prepare(classifier, X_pool, n_instances, random_state)
    picks, count, threshold = dropquery_select(pool, n_instances, rng, dropout=dropout, n_dropout=n_dropout,
                                               candidates_per_query=candidates_per_query,
                                               centroid_start=centroid_start, kmeans_subsample=kmeans_subsample)
    metrics = {"disagreement": (count / n_dropout).astype(np.float32), "threshold": threshold}
    return query_result(picks, metrics, return_metrics)
