"""TypiClust (Hacohen, Dekel & Weinshall, "Active Learning on a Budget: Opposite Strategies
Suit High and Low Budgets", ICML 2022): the most typical sample of each of the largest
clusters that hold no label.

The rules are the authors' (``avihu111/TypiClust``, ``deep-al/pycls/al/typiclust.py``):
L2-normalised embeddings; k-means over the labeled and unlabeled samples with
``K = min(L + b, 500)`` clusters for ``L`` labels and a batch of ``b``; clusters of 5 samples
or fewer left out; the clusters ordered by fewest labeled members, then largest; and ``b``
times, going round that order, the unlabeled member of highest typicality,

.. math::

    \\operatorname{typicality}(x) = \\Big(\\frac{1}{k} \\sum_{x' \\in \\operatorname{kNN}(x)}
    \\|f(x) - f(x')\\|^2 + 10^{-5}\\Big)^{-1},

over the ``k = min(20, m // 2)`` nearest of the ``m`` remaining unlabeled members of its
cluster (squared distances: the authors' faiss ``IndexFlatL2``).

Where this differs from the authors' code, so that any pool gives a full batch:
k-means is :func:`~._kmeans.weighted_kmeans` (k-means++ seeds, faiss's Lloyd iterations,
seeded by ``random_state``; the best of 10 runs up to 50 clusters, of 3 above, as the
authors' unseeded scikit-learn ``KMeans`` / ``MiniBatchKMeans`` defaults), fitted on a uniform sample of
``kmeans_subsample`` pool samples (plus the labeled
ones) on larger pools; a cluster whose unlabeled members are all taken leaves the round (the
authors' code fails there), and when every cluster above the minimum size is spent the
smaller ones follow in the same order. The neighbours are exact up to 10^4 members and
approximate above (:mod:`._knn`). scikit-activeml's ``TypiClust`` (1.0) clusters with
``K = L + b`` (no cap), keeps every cluster, takes each cluster once and uses ``k = 5`` and
mean (not squared) distances; ``tests/strategies/test_reference.py`` checks that both pick
the same samples where these choices agree.
"""
from __future__ import annotations

import numpy as np
import torch

from ._kmeans import kmeans_on_pool
from ._knn import knn as nearest_neighbours
from ._linalg import nearest_centers, unit_rows
from .._validation import check_int
from ..embeddings.disk import as_tensor
from ._pool import prepare
from ._result import query_result
from .cec import KMEANS_SUBSAMPLE

#: The authors' cap on the number of clusters (k-means costs pool size x clusters).
MAX_CLUSTERS = 500
#: Clusters of this many samples or fewer are picked from only when the others are spent.
MIN_CLUSTER_SIZE = 5
#: Neighbours of the typicality (at most half the remaining members).
K_NN = 20
EPS = 1e-5


def typicality(features, k: int = K_NN, rng=None) -> np.ndarray:
    """Inverse mean squared distance of each row to its ``k`` nearest other rows.

    Parameters
    ----------
    features : array-like of shape (m, d)
        L2-normalised embeddings (squared distances are ``2 - 2`` cosine).
    k : int, default=20
        Neighbours; clipped to ``m // 2`` (the authors' rule for small clusters), and a
        single row (``k = 0``) has typicality 1.
    rng : numpy.random.RandomState, optional
        Seeds the approximate neighbour search above 10^4 rows.

    Returns
    -------
    np.ndarray of shape (m,), float32
        ``1 / (mean squared distance to the k nearest + 1e-5)``: dense regions score high.

    Examples
    --------
    >>> import numpy as np
    >>> angles = np.deg2rad([0.0, 5.0, 10.0, 90.0])
    >>> typicality(np.stack([np.cos(angles), np.sin(angles)], 1), k=2).argmax()
    np.int64(1)
    """
    F = as_tensor(features)
    k = min(int(k), len(F) // 2)
    if k < 1:
        return np.ones(len(F), dtype=np.float32)
    _, sim = nearest_neighbours(F, k, rng or np.random.RandomState(0))
    mean_sq = (2.0 - 2.0 * sim).clamp_min(0.0).mean(1)
    return (1.0 / (mean_sq + EPS)).numpy()


def _cluster_order(sizes, covered, eligible):
    """Eligible clusters by fewest labeled members, then largest, then lowest index."""
    order = np.lexsort((np.arange(len(sizes)), -sizes, covered))
    return order[eligible[order]]


def typiclust_select(features, n_instances, rng, *, labeled_features=None, k=K_NN,
                     min_cluster_size=MIN_CLUSTER_SIZE, max_clusters=MAX_CLUSTERS,
                     kmeans_subsample=KMEANS_SUBSAMPLE):
    """TypiClust's picks: ``(indices, cluster of every pool sample, typicality)``.

    Parameters
    ----------
    features : array-like of shape (n, d)
        Embeddings of the unlabeled pool (normalised here).
    n_instances : int
        Batch size ``b`` (at most ``n``).
    rng : numpy.random.RandomState
        Seeds k-means, its sample and the neighbour search.
    labeled_features : array-like of shape (L, d), optional
        Embeddings of the labeled samples: clustered with the pool; clusters holding them
        come last.
    k : int, default=20
        Neighbours of the typicality.
    min_cluster_size : int, default=5
        Clusters this small or smaller come after the others.
    max_clusters : int, default=500
        Cap on the number of clusters.
    kmeans_subsample : int or None, default=20000
        k-means sample size on larger pools (see :func:`typiclust_query`).

    Returns
    -------
    indices : np.ndarray of shape (n_instances,)
        Distinct pool indices, in the order picked.
    cluster : np.ndarray of shape (n,)
        Each pool sample's k-means cluster.
    typicality : np.ndarray of shape (n,)
        The typicality each sample had in its cluster's last scoring (NaN where its cluster
        was never scored).

    Examples
    --------
    Two groups; the middle of each is its most typical sample:

    >>> import numpy as np
    >>> angles = np.deg2rad([0, 7, 9, 10, 11, 13, 20, 90, 97, 99, 100, 101, 103, 110])
    >>> F = np.stack([np.cos(angles), np.sin(angles)], 1)
    >>> picks, _, _ = typiclust_select(F, 2, np.random.RandomState(0), k=2)
    >>> sorted(picks.tolist())
    [3, 10]
    """
    F = unit_rows(features)
    n = len(F)
    L = as_tensor(labeled_features) if labeled_features is not None and len(labeled_features) else None
    L = None if L is None else torch.nn.functional.normalize(L, dim=1)
    n_labeled = 0 if L is None else len(L)
    n_clusters = max(1, min(n_instances + n_labeled, max_clusters, n + n_labeled))
    # The authors' scikit-learn runs k-means 10 times up to 50 clusters (KMeans), 3 above
    # (MiniBatchKMeans), and keeps the best.
    centers, cluster = kmeans_on_pool(F, n_clusters, rng, subsample=kmeans_subsample, extra=L,
                                      n_init=10 if n_clusters <= 50 else 3)
    K = len(centers)
    pool_sizes = np.bincount(cluster, minlength=K)
    covered = np.zeros(K, dtype=np.int64)
    if L is not None:
        covered = np.bincount(nearest_centers(L, centers)[0][:, 0].numpy(), minlength=K)
    sizes = pool_sizes + covered
    # Members of each cluster, in pool order.
    by_cluster = np.split(np.argsort(cluster, kind="stable"), np.cumsum(pool_sizes)[:-1])
    large = sizes > min_cluster_size
    rounds = [_cluster_order(sizes, covered, large & (pool_sizes > 0)),
              _cluster_order(sizes, covered, ~large & (pool_sizes > 0))]
    available = np.ones(n, dtype=bool)
    scores = np.full(n, np.nan, dtype=np.float32)
    picks = []
    for order in rounds:
        while len(picks) < n_instances and len(order):
            left = []
            for c in order:
                if len(picks) == n_instances:
                    break
                members = by_cluster[c][available[by_cluster[c]]]
                typical = typicality(F[torch.as_tensor(members)], k, rng)
                scores[members] = typical
                pick = int(members[np.argmax(typical)])  # ties: the first, as the authors'
                picks.append(pick)
                available[pick] = False
                if len(members) > 1:
                    left.append(c)
            order = left
    return np.asarray(picks, dtype=np.intp), cluster, scores


def typiclust_query(classifier, X_pool, n_instances=1, *, random_state=None, k=K_NN,
                    min_cluster_size=MIN_CLUSTER_SIZE, max_clusters=MAX_CLUSTERS,
                    kmeans_subsample=KMEANS_SUBSAMPLE, return_metrics=False):
    """TypiClust query: the most typical sample of the largest clusters without a label.

    A low-budget method: it reads only the embeddings (no probabilities), so round 0 and
    every later round pick by density and coverage, never by the model's uncertainty.

    Parameters
    ----------
    classifier : modAL learner, ClipPromptClassifier or Pipeline ending in one
        Its ``transform`` gives the embeddings; a learner's ``X_training`` is the labeled set.
    X_pool : sequence
        Unlabeled pool.
    n_instances : int, default=1
        Batch size ``b``, at most ``len(X_pool)``.
    random_state : int, RandomState or None
        Seeds k-means and its sample.
    k : int, default=20
        Neighbours of the typicality (the authors' 20; at most half the cluster).
    min_cluster_size : int, default=5
        Clusters of this many samples or fewer (labeled ones counted) come after all the
        others (the authors leave them out).
    max_clusters : int, default=500
        Cap on ``K = L + b`` (the authors' 500).
    kmeans_subsample : int or None, default=20000
        Fit k-means on a uniform sample of this many pool samples (never fewer than 50 per
        cluster) when the pool is larger, then assign every sample; None: the whole pool.
    return_metrics : bool, default=False
        Return ``(indices, metrics)`` whatever the installed modAL expects.

    Returns
    -------
    indices or (indices, metrics)
        See :ref:`strategies-return`; ``metrics["cluster"]`` (each sample's k-means cluster)
        and ``metrics["typicality"]`` (NaN outside the clusters scored).

    Raises
    ------
    ValueError
        ``X_pool`` is empty, ``n_instances`` is not an int in ``[1, len(X_pool)]``, or
        ``k``, ``max_clusters`` < 1 or ``min_cluster_size`` < 0.
    TypeError
        The classifier has no ``transform`` (TypiClust needs image embeddings).

    Examples
    --------
    >>> import numpy as np
    >>> from modal_vlm import ClipPromptClassifier
    >>> images = np.random.default_rng(0).integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    >>> clf = ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit", verbose=0)
    >>> idx, metrics = typiclust_query(clf, images, 3, random_state=0, return_metrics=True)
    >>> len(set(idx.tolist())), metrics["cluster"].shape
    (3, (30,))
    """
    check_int("k", k)
    check_int("min_cluster_size", min_cluster_size, 0)
    check_int("max_clusters", max_clusters)
    pool, n_instances, rng = prepare(classifier, X_pool, n_instances, random_state)
    picks, cluster, scores = typiclust_select(pool.features, n_instances, rng,
                                              labeled_features=pool.labeled_features, k=k,
                                              min_cluster_size=min_cluster_size, max_clusters=max_clusters,
                                              kmeans_subsample=kmeans_subsample)
    return query_result(picks, {"cluster": cluster, "typicality": scores}, return_metrics)
