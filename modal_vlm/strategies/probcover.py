"""ProbCover (Yehuda, Dekel, Hacohen & Weinshall, "Active Learning Through a Covering Lens",
NeurIPS 2022): greedy maximum coverage of delta-balls in the embedding space.

Around every sample (L2-normalised embedding) lies a ball of radius ``delta``; a sample is
covered once a labeled sample's ball holds it. ``b`` times, ProbCover labels the pool sample
whose ball holds the most uncovered samples, then marks them covered. The rules are the
authors' (``avihu111/TypiClust``, ``deep-al/pycls/al/prob_cover.py``): the graph
``x -> y`` iff ``||f(x) - f(y)|| < delta`` (self-loops included), the labeled set's balls
covering first, the highest out-degree picked; once everything is covered, a random pick
(the paper's rule; the authors' code takes index 0, which can be a labeled sample).

**delta** (``delta="auto"``): the paper's rule, the largest radius whose balls are pure
for a share ``alpha`` = 0.95 of the samples, a ball being pure when all it holds share one
k-means cluster (``K`` = number of classes, the best of 10 runs). A ball of ``x`` is pure exactly when ``delta``
is at most ``r(x)``, the distance from ``x`` to the nearest sample of another cluster, so the
largest such ``delta`` is a quantile of ``r``: the ``floor((1 - alpha) m)``-th smallest of
the ``m`` values, found exactly instead of on a grid (the authors' code searches a grid,
scikit-activeml's ``0.2, 0.4, ..., 2.0``, and ``sanketx/AL-foundation-models`` bisects).
On pools above ``purity_sample`` samples, ``r`` is computed for a uniform sample of that
many (against the whole pool): an estimate of the quantile.

Scale: the graph is built in blocks of pairs (no ``n x n`` matrix; ``n^2 d`` multiply-adds,
as the authors' GPU loop) and held as edge lists, memory ``O(edges)``. When a sample of 1,000
rows predicts more than :data:`MAX_EDGES` edges, coverage is counted on a uniform sample of
the pool's samples (each edge list then holds only the sampled targets): the degrees are
unbiased estimates of the true ones, scaled down.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ._kmeans import kmeans_on_pool
from ._linalg import BLOCK_BYTES, row_blocks, unit_rows
from .._validation import check_number
from ..embeddings.disk import as_tensor
from ._pool import prepare
from ._result import query_result
from .cec import KMEANS_SUBSAMPLE

#: The paper's purity target.
ALPHA = 0.95
#: Pool samples whose nearest other-cluster distance sets ``delta`` (all below this size).
PURITY_SAMPLE = 10_000
#: Most edges the graph holds (8 bytes each) before coverage is counted on sampled targets.
MAX_EDGES = 50_000_000
#: Rows whose degrees estimate the number of edges.
EDGE_SAMPLE = 1_000
#: k-means runs behind the purity (scikit-learn's long-time ``KMeans`` default, which the
#: authors' delta search used): one run can merge two classes and shrink delta by half.
PURITY_N_INIT = 10
#: A ball of this radius holds the whole unit sphere (but antipodes).
SPHERE_DIAMETER = 2.0


def _square_blocks(n: int):
    """Row blocks such that a block of rows times a block of columns fits ``BLOCK_BYTES``."""
    return row_blocks(n, 1, max(1, int(math.sqrt(BLOCK_BYTES / 4))))


def _similarity_threshold(delta: float) -> float:
    # On unit vectors ||x - y||^2 = 2 - 2 <x, y>: d < delta iff <x, y> > 1 - delta^2 / 2.
    return 1.0 - delta * delta / 2.0


def nearest_other_cluster(features, cluster, queries) -> np.ndarray:
    """Distance of each row ``queries`` to the nearest row of ``features`` in another cluster.

    Parameters
    ----------
    features : pool matrix of shape (n, d)
        L2-normalised embeddings.
    cluster : array-like of shape (n,)
        Cluster of every row.
    queries : array-like of int
        The rows to measure.

    Returns
    -------
    np.ndarray of shape (len(queries),), float32
        ``inf`` where every row shares the query's cluster.
    """
    cluster_t = torch.as_tensor(np.asarray(cluster))
    queries = np.asarray(queries)
    best = torch.full((len(queries),), -math.inf)
    for qb in _square_blocks(len(queries)):
        Q, cq = features[torch.as_tensor(queries[qb])], cluster_t[queries[qb]]
        for tb in _square_blocks(len(features)):
            S = Q @ features[tb].T
            S[cq[:, None] == cluster_t[tb][None, :]] = -math.inf
            best[qb] = torch.maximum(best[qb], S.max(1).values)
    return (2.0 - 2.0 * best).clamp_min(0.0).sqrt().numpy()


def purity_delta(features, n_clusters, rng, *, alpha=ALPHA, purity_sample=PURITY_SAMPLE,
                 kmeans_subsample=KMEANS_SUBSAMPLE) -> float:
    """The largest ``delta`` whose balls are pure for a share ``alpha`` of the samples.

    Parameters
    ----------
    features : array-like of shape (n, d)
        Embeddings (normalised here).
    n_clusters : int
        k-means clusters that define purity (the paper: the number of classes).
    rng : numpy.random.RandomState
        Seeds k-means and the sample.
    alpha : float, default=0.95
        Share of pure balls, in ``(0, 1)``.
    purity_sample : int, default=10000
        Rows measured (all of a smaller pool).
    kmeans_subsample : int or None, default=20000
        k-means sample size (see :func:`~._kmeans.kmeans_on_pool`).

    Returns
    -------
    float
        ``delta``, at most 2 (the diameter of the unit sphere: with one cluster every ball
        is pure).

    Examples
    --------
    Two tight groups far apart: balls up to the gap between them stay pure.

    >>> import numpy as np
    >>> angles = np.deg2rad([0, 1, 2, 3, 60, 61, 62, 63])
    >>> F = np.stack([np.cos(angles), np.sin(angles)], 1)
    >>> round(purity_delta(F, 2, np.random.RandomState(0), alpha=0.9), 3)  # 57 degrees apart
    0.954
    """
    F = unit_rows(features)
    _, cluster = kmeans_on_pool(F, n_clusters, rng, subsample=kmeans_subsample, n_init=PURITY_N_INIT)
    n = len(F)
    queries = np.arange(n) if n <= purity_sample else np.sort(rng.choice(n, purity_sample, replace=False))
    r = np.sort(nearest_other_cluster(F, cluster, queries))
    # At most floor((1 - alpha) m) balls may be impure (1e-9: 1 - 0.9 is 0.0999... in floats).
    return float(min(r[int(math.floor((1.0 - alpha) * len(r) + 1e-9))], SPHERE_DIAMETER))


def delta_graph(features, delta, targets=None):
    """Edges ``x -> y`` with ``||f(x) - f(y)|| < delta``, ``x`` every row, ``y`` in ``targets``.

    Parameters
    ----------
    features : pool matrix of shape (n, d)
        L2-normalised embeddings.
    delta : float
        Ball radius.
    targets : array-like of int, optional
        The rows that can be covered (default all).

    Returns
    -------
    x : np.ndarray of int32
        Source row of each edge.
    y : np.ndarray of int32
        Target row of each edge (self-loops included).
    """
    threshold = _similarity_threshold(delta)
    targets = np.arange(len(features)) if targets is None else np.asarray(targets)
    whole = len(targets) == len(features)  # all rows: slices, no gathers
    xs, ys = [], []
    for rb in _square_blocks(len(features)):
        Q = features[rb]
        for tb in _square_blocks(len(targets)):
            T = features[tb] if whole else features[torch.as_tensor(targets[tb])]
            nz = torch.nonzero(Q @ T.T > threshold)
            xs.append((nz[:, 0] + rb.start).to(torch.int32).numpy())
            ys.append(targets[tb][nz[:, 1].numpy()].astype(np.int32))
    return np.concatenate(xs), np.concatenate(ys)


def _coverable_targets(F, delta, rng):
    """All rows, or a uniform sample when the graph would exceed :data:`MAX_EDGES` edges."""
    n = len(F)
    rows = np.sort(rng.choice(n, min(n, EDGE_SAMPLE), replace=False))
    threshold = _similarity_threshold(delta)
    degree = sum(int((F[torch.as_tensor(rows)] @ F[tb].T > threshold).sum()) for tb in _square_blocks(n))
    expected = degree / len(rows) * n
    if expected <= MAX_EDGES:
        return None
    return np.sort(rng.choice(n, max(1, int(n * MAX_EDGES / expected)), replace=False))


def _covered_by(F, labeled, delta, targets):
    """Pool rows (among ``targets``) within ``delta`` of a labeled sample."""
    covered = np.zeros(len(F), dtype=bool)
    if labeled is None or not len(labeled):
        return covered
    threshold = _similarity_threshold(delta)
    targets = np.arange(len(F)) if targets is None else targets
    L = torch.nn.functional.normalize(as_tensor(labeled), dim=1)
    for tb in _square_blocks(len(targets)):
        rows = targets[tb]
        near = torch.zeros(len(rows), dtype=torch.bool)
        for lb in _square_blocks(len(L)):
            near |= (L[lb] @ F[torch.as_tensor(rows)].T > threshold).any(0)
        covered[rows[near.numpy()]] = True
    return covered


def _ranges(starts, stops):
    """The concatenated ``arange(start, stop)`` of every pair."""
    lengths = stops - starts
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return offsets + np.arange(int(lengths.sum()))


def max_coverage(x, y, n, n_instances, rng, covered=None):
    """Greedy maximum coverage on the graph ``x -> y``: ``(picks, out-degree before)``.

    Parameters
    ----------
    x, y : array-like of int
        Edges (each pair once).
    n : int
        Number of rows.
    n_instances : int
        Picks to make.
    rng : numpy.random.RandomState
        Breaks ties between equal degrees, and picks at random once all is covered.
    covered : array-like of bool, optional
        Rows covered before the first pick (by the labeled set).

    Returns
    -------
    picks : np.ndarray of shape (n_instances,)
        Distinct rows, in the order picked.
    degree : np.ndarray of shape (n,)
        Each row's number of uncovered targets before the first pick.

    Examples
    --------
    Row 0 reaches 0, 1, 2; row 3 reaches 3 and 2; once 0 is picked, 3 covers one new row:

    >>> x, y = np.array([0, 0, 0, 3, 3]), np.array([0, 1, 2, 3, 2])
    >>> picks, degree = max_coverage(x, y, 4, 2, np.random.RandomState(0))
    >>> picks.tolist(), degree.tolist()
    ([0, 3], [3, 0, 0, 2])
    """
    x, y = np.asarray(x, dtype=np.int64), np.asarray(y, dtype=np.int64)
    covered = np.zeros(n, dtype=bool) if covered is None else np.array(covered, dtype=bool)
    degree = np.bincount(x[~covered[y]], minlength=n)
    before = degree.copy()
    by_x, by_y = np.argsort(x, kind="stable"), np.argsort(y, kind="stable")
    x_start = np.concatenate([[0], np.cumsum(np.bincount(x, minlength=n))])
    y_start = np.concatenate([[0], np.cumsum(np.bincount(y, minlength=n))])
    picked = np.zeros(n, dtype=bool)
    picks = []
    for _ in range(n_instances):
        masked = np.where(picked, -1, degree)
        best = masked.max()
        pick = int(rng.choice(np.flatnonzero(masked == best) if best > 0 else np.flatnonzero(~picked)))
        picks.append(pick)
        picked[pick] = True
        reached = y[by_x[x_start[pick]:x_start[pick + 1]]]
        new = np.unique(reached[~covered[reached]])
        covered[new] = True
        # Every edge into a newly covered row stops counting for its source.
        degree -= np.bincount(x[by_y[_ranges(y_start[new], y_start[new + 1])]], minlength=n)
    return np.asarray(picks, dtype=np.intp), before


def probcover_select(features, n_instances, rng, *, labeled_features=None, delta="auto", n_classes=None,
                     alpha=ALPHA, purity_sample=PURITY_SAMPLE, kmeans_subsample=KMEANS_SUBSAMPLE):
    """ProbCover's picks on embeddings: ``(indices, degree before, covered before, delta)``.

    Parameters
    ----------
    features : array-like of shape (n, d)
        Embeddings of the unlabeled pool (normalised here).
    n_instances : int
        Picks to make (at most ``n``).
    rng : numpy.random.RandomState
        Seeds the purity k-means, the samples and the tie breaks.
    labeled_features : array-like of shape (L, d), optional
        Embeddings of the labeled set, whose balls cover first.
    delta : "auto" or float, default="auto"
        Ball radius (see :func:`probcover_query`).
    n_classes : int, optional
        k-means clusters of the purity (needed with ``delta="auto"``).
    alpha : float, default=0.95
        Purity target of ``delta="auto"``.
    purity_sample : int, default=10000
        Samples whose purity sets ``delta`` on larger pools.
    kmeans_subsample : int or None, default=20000
        k-means sample size of ``delta="auto"``.

    Returns
    -------
    indices : np.ndarray of shape (n_instances,)
        Distinct pool indices, in the order picked.
    degree : np.ndarray of shape (n,)
        Uncovered samples each ball held before the first pick.
    covered : np.ndarray of shape (n,), bool
        Samples covered by the labeled set.
    delta : float
        The radius used.

    Examples
    --------
    Three tight groups of 4, 3 and 2 samples: one pick per group, largest first.

    >>> import numpy as np
    >>> angles = np.deg2rad([0, 1, 2, 3, 60, 61, 62, 120, 121])
    >>> F = np.stack([np.cos(angles), np.sin(angles)], 1)
    >>> picks, *_ = probcover_select(F, 3, np.random.RandomState(0), delta=0.2)
    >>> (angles[picks] // np.deg2rad(60)).tolist()
    [0.0, 1.0, 2.0]
    """
    F = unit_rows(features)
    if delta == "auto":
        delta = purity_delta(F, n_classes, rng, alpha=alpha, purity_sample=purity_sample,
                             kmeans_subsample=kmeans_subsample)
    targets = _coverable_targets(F, delta, rng)
    covered = _covered_by(F, labeled_features, delta, targets)
    x, y = delta_graph(F, delta, targets)
    picks, degree = max_coverage(x, y, len(F), n_instances, rng, covered)
    return picks, degree, covered, float(delta)


def probcover_query(classifier, X_pool, n_instances=1, *, random_state=None, delta="auto", alpha=ALPHA,
                    purity_sample=PURITY_SAMPLE, kmeans_subsample=KMEANS_SUBSAMPLE, return_metrics=False):
    """ProbCover query: the balls of radius ``delta`` that cover the most uncovered samples.

    A low-budget method: it reads the embeddings, and the number of classes for
    ``delta="auto"`` (from the classifier's probabilities), never the model's uncertainty.

    Parameters
    ----------
    classifier : modAL learner, ClipPromptClassifier or Pipeline ending in one
        Its ``transform`` gives the embeddings; a learner's ``X_training`` is the labeled set.
    X_pool : sequence
        Unlabeled pool.
    n_instances : int, default=1
        Batch size, at most ``len(X_pool)``.
    random_state : int, RandomState or None
        Seeds the purity k-means, the samples and the tie breaks.
    delta : "auto" or float, default="auto"
        Ball radius on unit embeddings (distances lie in ``[0, 2]``). "auto": the largest
        radius with a share ``alpha`` of pure balls (the paper's rule, module docstring),
        k-means with one cluster per class.
    alpha : float, default=0.95
        Purity target of ``delta="auto"``, in ``(0, 1)``.
    purity_sample : int, default=10000
        Samples whose purity sets ``delta`` on larger pools.
    kmeans_subsample : int or None, default=20000
        k-means sample size of ``delta="auto"``; None: the whole pool.
    return_metrics : bool, default=False
        Return ``(indices, metrics)`` whatever the installed modAL expects.

    Returns
    -------
    indices or (indices, metrics)
        See :ref:`strategies-return`; ``metrics["degree"]`` (uncovered samples each ball
        held before the batch), ``metrics["covered"]`` (covered by the labeled set before
        it) and ``metrics["delta"]`` (the radius used).

    Raises
    ------
    ValueError
        ``X_pool`` is empty, ``n_instances`` is not an int in ``[1, len(X_pool)]``,
        ``delta`` is neither "auto" nor > 0, or ``alpha`` lies outside ``(0, 1)``.
    TypeError
        The classifier has no ``transform`` (ProbCover needs image embeddings).

    Examples
    --------
    >>> import numpy as np
    >>> from modal_vlm import ClipPromptClassifier
    >>> images = np.random.default_rng(0).integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    >>> clf = ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit", verbose=0)
    >>> idx, metrics = probcover_query(clf, images, 3, random_state=0, return_metrics=True)
    >>> len(set(idx.tolist())), bool(metrics["degree"][idx[0]] == metrics["degree"].max())
    (3, True)
    """
    check_number("delta", delta, auto=True)
    check_number("alpha", alpha, 0.0, 1.0)
    pool, n_instances, rng = prepare(classifier, X_pool, n_instances, random_state)
    n_classes = pool.proba.shape[1] if delta == "auto" else None
    picks, degree, covered, delta = probcover_select(
        pool.features, n_instances, rng, labeled_features=pool.labeled_features, delta=delta, n_classes=n_classes,
        alpha=alpha, purity_sample=purity_sample, kmeans_subsample=kmeans_subsample)
    return query_result(picks, {"degree": degree, "covered": covered, "delta": delta}, return_metrics)
