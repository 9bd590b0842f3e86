"""CEC: Calibrated Entropy-weighted Clustering (Safaei & Patel, WACV 2025).

The algorithm as implemented, with its paper: :doc:`/algorithms`; in short, for the unlabeled pool ``U``:

1. calibrated entropy ``H(x)``: divide each class's probability by its prior ``P(c)``, the
   mean of its ``top_n`` largest probabilities over ``U`` (CLIP favours some classes);
2. neighbour-aware uncertainty ``U(x) = (1 - alpha) H(x) + alpha H_nb(x)``, ``H_nb`` the
   similarity-weighted mean entropy of the ``k`` nearest pool neighbours;
3. weighted k-means on the embeddings with weights ``U``; each chosen cluster gives the
   sample nearest to its centroid (the spec's rule, ``selection="centroid"``). The spec makes
   ``K = n_instances`` clusters; :func:`cec_query`'s default (``avoid_labeled=True``,
   ``clusters_per_label=2``) makes ``K = n_instances + 2 L`` for ``L`` labeled samples and
   picks from the heaviest clusters that hold no label (TypiClust's covering), the variant
   the strategy benchmark chose: the spec's form was not ahead of random there
   (``benchmarks/results/strategies.md``).

Exact and approximate parts at scale: calibration and entropies are exact (computed over
probability blocks, so a memory-mapped :class:`~modal_vlm.embeddings.EmbeddingPool` never holds the
``n x C`` matrix). The kNN is exact (blocked, no ``n x n`` matrix) up to 10^4 samples and an
inverted-file self-join on faiss k-means cells with exact re-ranking above (``knn="exact"``
forces exactness). k-means (faiss, weighted) runs on the whole pool up to
``kmeans_subsample`` points and otherwise on a uniform random subsample of that
size (at least ``50 * n_instances``), after which the whole pool is assigned to the centroids;
``kmeans_subsample=None`` clusters the whole pool.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ._kmeans import weighted_kmeans
from .._validation import check_int
from ..embeddings.disk import as_matrix, as_tensor
from ._knn import knn as nearest_neighbours
from ._linalg import nearest_centers, nearest_rows, row_blocks
from ._pool import prepare
from ._result import query_result
from .open_set import pool_none_probability
from .uncertainty import entropy, top_scores

SELECTIONS = ("centroid", "most_uncertain", "candidates")
#: Default size of the k-means sample on large pools (never fewer than 50 per cluster).
KMEANS_SUBSAMPLE = 20_000
#: ``selection="candidates"`` clusters this many top-``U`` samples per query (default).
CANDIDATES_PER_QUERY = 10
#: Most k-means clusters the covering of the labeled set makes (TypiClust's cap is 500 too):
#: k-means costs O(pool x clusters), and with thousands of labels coverage would cost more
#: than it tells (more clusters then hold a label, and the picks fall back to covered ones).
MAX_COVERING_CLUSTERS = 500
EPS = 1e-8


def class_priors(proba, top_n=None) -> np.ndarray:
    """``P(c)``: the mean of the ``top_n`` largest ``p(c|x)`` over the pool, per class.

    ``P(c) = mean of the top_n largest values of p(c|x) over x in U`` (step 1 of CEC,
    :doc:`/algorithms`): CLIP favours some classes, and dividing by ``P(c)`` corrects it.

    Parameters
    ----------
    proba : array-like of shape (n, C)
        Class probabilities ``p(c|x)`` of the ``n`` pool samples.
    top_n : int, optional
        Samples averaged per class. Default ``ceil(n / C)``, the count a balanced pool would
        have per class; clipped to ``[1, n]``.

    Returns
    -------
    np.ndarray of shape (C,), float32
        The prior ``P(c)`` of each class.

    Examples
    --------
    >>> class_priors([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.7, 0.3]]).round(3)
    array([0.85, 0.35], dtype=float32)
    """
    P = as_tensor(proba)
    return _priors_of_blocks([P], len(P), top_n)


def _priors_of_blocks(blocks, n: int, top_n=None) -> np.ndarray:
    """:func:`class_priors` over probability blocks: per class, the mean of its ``top_n`` largest.

    Per class, only the entries above its current ``top_n``-th largest can enter its top, so
    only those are kept (as a list of chunks: growing one array would copy it for every
    block), and the top is re-selected when twice ``top_n`` have gathered: on a pool of 10^7
    the selection then runs a few times per class rather than once per block (a top-k over
    the kept rows and each block, once per block, was a large part of the query at that size:
    ``benchmarks/results/query_scaling.md``).
    """
    chunks = counts = threshold = None
    for P in blocks:
        if chunks is None:
            top_n = min(max(math.ceil(n / P.shape[1]) if top_n is None else int(top_n), 1), n)
            chunks, counts = [[] for _ in range(P.shape[1])], [0] * P.shape[1]
            threshold = torch.full((P.shape[1],), -math.inf, dtype=P.dtype)
        by_class = P.T.contiguous()  # each class's column as one contiguous row
        above = by_class > threshold[:, None]  # equal to the top_n-th largest: the mean stays
        for c in torch.nonzero(above.any(1)).reshape(-1).tolist():
            chunks[c].append(by_class[c][above[c]])
            counts[c] += len(chunks[c][-1])
            if counts[c] >= 2 * top_n:
                chunks[c] = [torch.topk(torch.cat(chunks[c]), top_n).values]
                counts[c], threshold[c] = top_n, chunks[c][0][-1]
    return np.array([float(torch.topk(v, min(top_n, len(v))).values.mean())
                     for v in (torch.cat(c) for c in chunks)], dtype=np.float32)


def _pool_entropy(pool, top_n, calibrate):
    """``(H, prior)`` of :func:`calibrated_entropy` over a pool's probability blocks."""
    prior = _priors_of_blocks((P for _, P in pool.proba_blocks()), pool.n, top_n) if calibrate else None
    H = np.empty(pool.n, dtype=np.float32)
    for rows, P in pool.proba_blocks():
        H[rows] = entropy(P, prior)
    return H, prior


def calibrated_entropy(proba, top_n=None, calibrate=True):
    """``H(x)`` of step 1: entropy of the prior-calibrated probabilities.

    ``q(c|x) = (p(c|x) / P(c)) / sum_c' (p(c'|x) / P(c'))`` and
    ``H(x) = -sum_c q(c|x) log q(c|x)``, with ``P(c)`` from :func:`class_priors`.

    Parameters
    ----------
    proba : array-like of shape (n, C)
        Class probabilities ``p(c|x)`` of the ``n`` pool samples.
    top_n : int, optional
        Samples averaged per class for the prior (see :func:`class_priors`).
    calibrate : bool, default=True
        False skips the calibration: plain entropy of ``p`` (the ablation).

    Returns
    -------
    H : np.ndarray of shape (n,), float32
        Calibrated entropy of each sample, in nats.
    prior : np.ndarray of shape (C,) or None
        ``P(c)``, None when ``calibrate=False`` (plain entropy).

    Examples
    --------
    >>> H, prior = calibrated_entropy([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.7, 0.3]])
    >>> H.round(3)
    array([0.517, 0.663, 0.665, 0.693], dtype=float32)
    """
    prior = class_priors(proba, top_n) if calibrate else None
    return entropy(proba, prior), prior


def neighbour_uncertainty(H, features, k=10, alpha=0.5, *, knn="auto", rng=None):
    """``U(x)`` and ``H_nb(x)`` of step 2.

    ``H_nb(x) = sum_j w_j H(x_j) / sum_j w_j`` over the ``k`` most cosine-similar other pool
    samples (``x`` itself excluded), ``w_j = max(s_j, 0) + eps`` with ``s_j`` the cosine
    similarity of ``f(x)`` and ``f(x_j)``; ``U = (1 - alpha) H + alpha H_nb``.

    Parameters
    ----------
    H : array-like of shape (n,)
        Per-sample (calibrated) entropy, from :func:`calibrated_entropy`.
    features : array-like of shape (n, d)
        Image embeddings ``f(x)`` of the same samples (cosine similarity; need not be
        normalised). Not read when ``alpha == 0``.
    k : int, default=10
        Neighbours per sample; clipped to ``n - 1``.
    alpha : float, default=0.5
        Weight of the neighbourhood term; 0 (or ``n == 1``) gives ``U = H_nb = H``.
    knn : {"auto", "exact", "approximate"}, default="auto"
        Neighbour search: exact blocked search up to 10^4 samples ("auto"), or an
        inverted-file self-join on faiss k-means cells with exact re-ranking above.
    rng : numpy.random.RandomState, optional
        Seeds the approximate search; default ``RandomState(0)``.

    Returns
    -------
    U : np.ndarray of shape (n,), float32
        Neighbour-aware uncertainty.
    H_nb : np.ndarray of shape (n,), float32
        Similarity-weighted mean entropy of each sample's neighbours.

    Raises
    ------
    ValueError
        ``knn`` is not one of the three methods.

    Examples
    --------
    >>> import numpy as np
    >>> F = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    >>> U, H_nb = neighbour_uncertainty(np.array([1.0, 0.0, 0.5]), F, k=1)
    >>> H_nb.round(3), U.round(3)
    (array([0. , 0.5, 0. ], dtype=float32), array([0.5 , 0.25, 0.25], dtype=float32))
    """
    H = np.asarray(H, dtype=np.float32)
    k = min(int(k), len(H) - 1)
    if alpha == 0 or k < 1:
        return H.copy(), H.copy()
    index, sim = nearest_neighbours(as_matrix(features), k, rng or np.random.RandomState(0), knn)
    # In row blocks: three (n, k) temporaries are 1.2 GB at 10^7 samples.
    H_nb, H_t = np.empty(len(H), dtype=np.float32), torch.from_numpy(H)
    for rows in row_blocks(len(H), 4 * k):
        w = sim[rows].clamp_min(0.0) + EPS
        H_nb[rows] = ((w * H_t[index[rows]]).sum(1) / w.sum(1)).numpy()
    return ((1.0 - alpha) * H + alpha * H_nb).astype(np.float32), H_nb


def _refill(picks, U, n_instances, rng) -> np.ndarray:
    """Complete ``picks`` (clusters left empty) with the highest-``U`` samples not yet picked."""
    picks = np.asarray(picks, dtype=np.intp)
    if len(picks) == n_instances:
        return picks
    taken = np.zeros(len(U), dtype=bool)
    taken[picks] = True
    by_u = top_scores(U, len(U), rng)
    return np.concatenate([picks, by_u[~taken[by_u]][:n_instances - len(picks)]])


def _centroid_picks(features, centers, members_count, U, n_instances, rng):
    """The untaken pool sample nearest to each centroid with members, then refills."""
    K = len(centers)
    # Each centroid's K nearest samples: at most K - 1 of them can be taken before its turn.
    nearest = nearest_rows(centers, features, min(K, len(features))).numpy()
    taken, picks = set(), []
    for cluster in np.flatnonzero(members_count):
        pick = next(int(i) for i in nearest[cluster] if int(i) not in taken)
        taken.add(pick)
        picks.append(pick)
    return _refill(picks, U, n_instances, rng)


def _most_uncertain_picks(labels, U, n_instances, rng):
    """The highest-``U`` member of each cluster ``>= 0`` (ties: lowest index), then refills."""
    order = np.lexsort((-U, labels))  # by cluster, then decreasing U; stable
    order = order[labels[order] >= 0]
    first = np.ones(len(order), dtype=bool)
    first[1:] = labels[order[1:]] != labels[order[:-1]]
    return _refill(order[first], U, n_instances, rng)


def _uncovered_clusters(labels, U, labeled_labels, n_instances, n_clusters):
    """The ``n_instances`` clusters to pick from: those holding no labeled sample first,
    each group by decreasing total ``U`` of its pool members (ties: lowest index).

    Every count runs over all ``n_clusters`` centroids: on a pool of near-duplicates (burst
    photos, copied files) some centroids hold no pool sample, or only labeled ones."""
    K = max(n_clusters, n_instances)
    covered = np.bincount(labeled_labels, minlength=K) > 0
    mass = np.bincount(labels, weights=U, minlength=K)
    order = np.lexsort((np.arange(K), -mass, covered))
    return order[:n_instances]


def _check_weight_power(weight_power):
    if not weight_power >= 0:  # also refuses NaN
        raise ValueError(f"weight_power must be >= 0, got {weight_power!r}.")


def _check_clusters_per_label(clusters_per_label):
    if isinstance(clusters_per_label, bool) or not isinstance(clusters_per_label, (int, np.integer)) \
            or clusters_per_label < 1:
        raise ValueError(f"clusters_per_label must be an integer >= 1, got {clusters_per_label!r}.")


def uncertainty_weighted_clustering(features, U, n_instances, rng, *, selection="centroid",
                                    kmeans_subsample=KMEANS_SUBSAMPLE, candidates_per_query=CANDIDATES_PER_QUERY,
                                    labeled_features=None, clusters_per_label=1, weight_power=1.0):
    """Step 3: ``n_instances`` distinct pool indices from weighted k-means on ``features``.

    Parameters
    ----------
    features : array-like of shape (n, d)
        Image embeddings of the pool, clustered.
    U : array-like of shape (n,)
        Sample weights (uncertainties), e.g. from :func:`neighbour_uncertainty`.
    n_instances : int
        Number of clusters ``K`` and of indices returned.
    rng : numpy.random.RandomState
        Seeds k-means++, the subsample and tie breaks.
    selection : {"centroid", "most_uncertain", "candidates"}, default="centroid"
        Within-cluster rule: the sample nearest the centroid (the paper), the most uncertain
        member, or centroid-nearest after clustering only the
        ``candidates_per_query * n_instances`` most uncertain samples.
    kmeans_subsample : int or None, default=20000
        Cluster a uniform random sample of this many points (at least ``50 * n_instances``)
        when the pool is larger, then assign the whole pool; None clusters the whole pool.
    candidates_per_query : int, default=10
        With ``selection="candidates"``: the candidate set's size per pick (at least 1).
    labeled_features : array-like of shape (L, d), optional
        Embeddings of the labeled samples. When given (and ``L > 0``), k-means makes
        ``n_instances + clusters_per_label * L`` clusters (at most ``MAX_COVERING_CLUSTERS``
        = 500, or ``n_instances`` if more) and the picks come from the ``n_instances`` of
        them that hold no labeled sample, heaviest (total ``U``) first; covered clusters only
        where fewer are uncovered. Without it, ``K = n_instances`` (the spec).
    clusters_per_label : int, default=1
        With ``labeled_features``: k-means clusters added per labeled sample (at least 1).
        More clusters are smaller, so "holds no label" excludes less of the pool around each
        label than one cluster per label does.
    weight_power : float, default=1.0
        The k-means sample weights are ``U ** weight_power``: 1 is the spec, larger values
        pull the centroids further towards uncertain regions, 0 clusters unweighted (the
        within-cluster rules still read ``U``).

    Returns
    -------
    np.ndarray of shape (n_instances,), int
        Distinct pool indices: one per chosen non-empty cluster, and for empty clusters the
        highest-``U`` samples not yet picked.

    Raises
    ------
    ValueError
        ``selection`` is not one of the three rules, ``candidates_per_query < 1``,
        ``clusters_per_label < 1`` or ``weight_power < 0``.

    Examples
    --------
    >>> import numpy as np
    >>> F = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]])
    >>> sorted(uncertainty_weighted_clustering(F, np.ones(6), 2, np.random.RandomState(0)).tolist())
    [1, 4]
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}.")
    if isinstance(candidates_per_query, bool) or not isinstance(candidates_per_query, (int, np.integer)) \
            or candidates_per_query < 1:
        raise ValueError(f"candidates_per_query must be an integer >= 1, got {candidates_per_query!r}.")
    _check_weight_power(weight_power)
    _check_clusters_per_label(clusters_per_label)
    F, U = as_matrix(features), np.asarray(U, dtype=np.float32)
    # Index copies only where a subset is meant: a copy of a 10^6-sample pool costs 2 GB.
    candidates, Fc, Uc = None, F, U
    if selection == "candidates":
        candidates = np.sort(top_scores(U, min(len(F), candidates_per_query * n_instances), rng))
        Fc, Uc = F[torch.as_tensor(candidates)], U[candidates]
    n_labeled = 0 if labeled_features is None else len(labeled_features)
    # At most one cluster per sample: a pool that small has every sample in a cluster.
    n_clusters = min(n_instances + clusters_per_label * n_labeled, max(n_instances, MAX_COVERING_CLUSTERS), len(Fc))
    fit_size = len(Fc) if kmeans_subsample is None else max(int(kmeans_subsample), 50 * n_clusters)
    weights = Uc ** weight_power
    if len(Fc) > fit_size:
        fit_rows = np.sort(rng.choice(len(Fc), fit_size, replace=False))
        centers = weighted_kmeans(Fc[torch.as_tensor(fit_rows)], n_clusters, rng, weights=weights[fit_rows])
    else:
        centers = weighted_kmeans(Fc, n_clusters, rng, weights=weights)
    labels = nearest_centers(Fc, centers)[0][:, 0].numpy()
    if n_labeled:
        labeled_labels = nearest_centers(as_tensor(labeled_features), centers)[0][:, 0].numpy()
        chosen = np.zeros(n_clusters, dtype=bool)
        chosen[_uncovered_clusters(labels, Uc, labeled_labels, n_instances, n_clusters)] = True
        labels = np.where(chosen[labels], labels, -1)  # members of the other clusters: not picked
    counts = np.bincount(labels[labels >= 0], minlength=n_clusters)
    if selection == "most_uncertain":
        picks = _most_uncertain_picks(labels, Uc, n_instances, rng)
    else:
        picks = _centroid_picks(Fc, centers, counts, Uc, n_instances, rng)
    return picks if candidates is None else candidates[picks]


def cec_query(classifier, X_pool, n_instances=1, *, random_state=None, top_n=None, k=10, alpha=0.5,
              calibrate=True, clustering=True, selection="centroid", knn="auto",
              kmeans_subsample=KMEANS_SUBSAMPLE, candidates_per_query=CANDIDATES_PER_QUERY, avoid_labeled=True,
              clusters_per_label=2, weight_power=1.0, open_set=True, return_metrics=False):
    """CEC query strategy (calibrated entropy, neighbours, uncertainty-weighted clustering).

    Parameters
    ----------
    classifier : modAL learner, ClipPromptClassifier or Pipeline ending in one
        Provides probabilities (zero-shot before any label: CEC works from round 0) and
        embeddings (``transform``, cached).
    X_pool : sequence
        Unlabeled pool, passed to the classifier as-is.
    n_instances : int, default=1
        Batch size ``b``.
    random_state : int, RandomState or None
        Seeds k-means, subsampling and tie breaks.
    top_n : int, optional
        Samples averaged per class for the prior (default ``ceil(|U| / C)``).
    k : int, default=10
        Neighbours in ``H_nb``.
    alpha : float, default=0.5
        Weight of the neighbourhood term; 0 disables it.
    calibrate : bool, default=True
        False uses plain entropy.
    clustering : bool, default=True
        False takes the top-``b`` samples by ``U``.
    selection : {"centroid", "most_uncertain", "candidates"}, default="centroid"
        Within-cluster selection rule, see :func:`uncertainty_weighted_clustering`.
    knn : {"auto", "exact", "approximate"}, default="auto"
        Neighbour search; "auto" is exact up to 10^4 pool samples.
    kmeans_subsample : int or None, default=20000
        k-means sample size on large pools; None clusters the whole pool.
    candidates_per_query : int, default=10
        With ``selection="candidates"``: the candidate set's size per pick.
    avoid_labeled : bool, default=True
        Cluster into ``n_instances + clusters_per_label * L`` clusters (``L`` labeled
        samples) and pick from the ``n_instances`` heaviest that hold no labeled sample
        (TypiClust's covering, Hacohen et al., ICML 2022); False makes ``n_instances``
        clusters regardless of the labels (the spec). Without labels both are the spec.
    clusters_per_label : int, default=2
        With ``avoid_labeled``: clusters added per labeled sample, see
        :func:`uncertainty_weighted_clustering`.

        The defaults of ``selection``, ``avoid_labeled`` and ``clusters_per_label`` were
        chosen by ``benchmarks/bench_strategies.py`` (CIFAR-10, the default offline model and
        learner, 8 rounds x 10 labels): they are ahead of random where the spec's form
        (``K = n_instances``) was within noise of it (``benchmarks/results/strategies.md``,
        ``strategies_20_seeds.md``). ``avoid_labeled=False, selection="centroid"`` is the spec.
    weight_power : float, default=1.0
        k-means weights ``U ** weight_power`` (1: the spec; 0: unweighted clusters), see
        :func:`uncertainty_weighted_clustering`.
    open_set : bool, default=True
        Multiply ``U`` by ``1 - p_none``, the probability that an image is like those the
        labeled set marks :data:`~modal_vlm.NONE` ("none of these classes"; see
        :mod:`modal_vlm.strategies.open_set`), so that clusters of junk weigh little and
        are not picked. Before the first "none" answer ``p_none`` is 0: on a pool without
        junk the picks are exactly those of ``open_set=False``. On pools with much junk it
        cuts CEC's picks of far junk (digits, screenshots) sharply and of near junk (other
        CIFAR-10 classes) a little, at an accuracy cost within one std on near junk
        (``benchmarks/results/open_set.md``).
    return_metrics : bool, default=False
        Return ``(indices, metrics)`` whatever the installed modAL expects.

    Returns
    -------
    indices or (indices, metrics)
        See :ref:`strategies-return`; ``metrics`` holds per-sample ``"U"`` (as used for the
        picks: with ``open_set``, times ``1 - p_none``), ``"H"``, ``"H_nb"``, the class
        ``"prior"`` (None when ``calibrate=False``) and, with ``open_set``,
        ``"none_probability"``.

    Raises
    ------
    ValueError
        ``X_pool`` is empty, ``n_instances`` is not an int in ``[1, len(X_pool)]``, ``alpha``
        lies outside ``[0, 1]``, ``k < 1``, ``top_n < 1``, ``selection`` / ``knn`` is unknown,
        ``candidates_per_query < 1``, ``clusters_per_label < 1`` or ``weight_power < 0``.
    TypeError
        The classifier has no ``transform``: CEC needs image embeddings (unless
        ``alpha=0`` and ``clustering=False``).

    Examples
    --------
    >>> import numpy as np
    >>> from modAL.models import ActiveLearner
    >>> from modal_vlm import ClipPromptClassifier
    >>> clf = ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit", verbose=0)
    >>> X_pool = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    >>> learner = ActiveLearner(estimator=clf, query_strategy=cec_query)
    >>> query_idx, query_images = learner.query(X_pool, n_instances=3)
    >>> len(set(query_idx.tolist()))
    3
    """
    pool, n_instances, rng = prepare(classifier, X_pool, n_instances, random_state)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}.")
    _check_weight_power(weight_power)  # before the costly steps
    _check_clusters_per_label(clusters_per_label)
    check_int("k", k, 1)
    if top_n is not None:
        check_int("top_n", top_n, 1)
    H, prior = _pool_entropy(pool, top_n, calibrate)
    needs_features = alpha > 0 or clustering
    features = pool.features if needs_features else None
    U, H_nb = neighbour_uncertainty(H, features, k, alpha, knn=knn, rng=rng) if alpha > 0 else (H, H)
    metrics = {"H": H, "H_nb": H_nb, "prior": prior}
    if open_set:  # images like those marked "none of these classes" weigh less
        metrics["none_probability"] = pool_none_probability(pool)
        U = U * (1.0 - metrics["none_probability"])
    metrics["U"] = U
    if clustering:
        labeled = pool.labeled_features if avoid_labeled else None
        picks = uncertainty_weighted_clustering(features, U, n_instances, rng, selection=selection,
                                                kmeans_subsample=kmeans_subsample,
                                                candidates_per_query=candidates_per_query,
                                                labeled_features=labeled, clusters_per_label=clusters_per_label,
                                                weight_power=weight_power)
    else:
        picks = top_scores(U, n_instances, rng)
    return query_result(picks, metrics, return_metrics)
