"""CB and CB+SQ (Kim et al., "Active Prompt Learning with Vision-Language Model Priors",
TMLR 2025): cluster-balanced picks on class-guided features, and selective querying.

What is implemented, and where each rule comes from (the authors' code,
``ml-postech/active-prompt-learning``: ``trainers/active_learning/cb.py``, ``cbsq.py`` and
``trainers/alvlm.py``; line numbers of its commit ``105a662``):

**Class-guided features.** With ``f(x)`` the L2-normalised image embedding, ``p(x)`` the
classifier's class probabilities (the softmax of its logits) and ``T`` the ``(C, d)``
L2-normalised class text features *the classifier currently uses* (the zero-shot prompts
before any label, the learned prompts after: ``cb.py`` 50, 62-63 and 74-77 use the trained
model's text features, and zero-shot CLIP's in round 0),

    g(x) = normalize([f(x) ; p(x) T])                    (cb.py 62-63, 107)

The text half is the probability-weighted mean of the class text features; the two halves are
not weighted otherwise (``f`` has norm 1, ``p T`` at most 1).

**Cluster-balanced picks.** k-means on ``g`` over the labeled set ``L`` *and* the pool, with
``K = b + |L|`` clusters for a batch of ``b`` (``cb.py`` 108-109 write ``C + |L|`` and ``C``
in round 0: the authors' batch is ``b = C``, ``alvlm.py`` 502-506; ``b`` keeps their invariant
that at least ``b`` clusters hold no labeled sample, the ``assert`` of ``cb.py`` 153).
Each non-empty cluster ``k`` has a labeled ratio ``r_k = n_k / s_k`` (labeled members over
members). ``b`` times: the cluster with the lowest ratio (ties: the largest, then the lowest
index) gives its unlabeled member nearest the centroid, and its ratio is updated
(``cb.py`` 126-163). The nearest member by cosine distance to the centroid (``cb.py`` 155) is
the nearest in Euclidean distance, since every ``g`` has norm 1. In round 0 (``L`` empty) this
is one pick per cluster of ``b`` clusters (``cb.py`` 115-124). The authors' k-means is
scikit-learn's with a fixed ``random_state=42``; here it is :mod:`._kmeans`' k-means++ and
Lloyd iterations seeded by ``random_state``.

**CB+SQ (selective querying).** ``K = 4 b + |L|`` clusters (``cbsq.py`` 115-116; ``b + |L|``
without labels: the authors' round 0 of CB+SQ is CB, ``alvlm.py`` 520-526). Class ``c``'s
threshold is the mean confidence ``max_c' p(c'|x)`` of the labeled samples labeled ``c``
under the current model; a class without labeled samples has none (never pseudo-labeled)
(``cbsq.py`` 104-112). A cluster-balanced pick whose confidence reaches the threshold of its
predicted class is *pseudo-labeled* with that prediction instead of being sent to the oracle
(``cbsq.py`` 168-173). Pseudo-labeled samples then train like labeled ones and count as labeled
in later rounds, in the cluster ratios and the thresholds (``alvlm.py`` 558-562: their label
is replaced by the prediction and they join the training set).

Budget accounting. The authors make ``C`` picks per round and report the budget minus the
pseudo-labels (``alvlm.py`` 529-530). Here the oracle budget of a round is fixed instead:
:func:`cbsq_query` returns exactly ``n_instances`` picks for the oracle and continues the
cluster-balanced order past pseudo-labeled picks until it has them, so a round trains on
more images for the same number of oracle labels. The pseudo-labeled picks come in the
metrics (the hook of :mod:`._result`), at most ``max_pseudo_labels`` per call (default
``n_instances``: the authors' round pseudo-labels at most its ``C`` picks); once that many are
taken, confident picks go to the oracle like the others.

Scale: the clustering runs on all ``|L| + |U|`` class-guided features (``2d`` floats each).
"""
from __future__ import annotations

import heapq

import numpy as np
import torch
import torch.nn.functional as F

from .._validation import check_int
from ..embeddings.disk import as_tensor
from ._kmeans import weighted_kmeans
from ._linalg import nearest_centers
from ._pool import prepare
from ._result import PSEUDO_LABELED, PSEUDO_LABELS, query_result

#: Clusters per queried sample, ``K = factor * b + |L|``: CB's 1 and CB+SQ's 4 (``cbsq.py`` 116).
CB_CLUSTER_FACTOR, CBSQ_CLUSTER_FACTOR = 1, 4


def class_guided_features(features, proba, text_features) -> torch.Tensor:
    """``g(x) = normalize([f(x) ; p(x) T])``, the features CB clusters.

    Parameters
    ----------
    features : array-like of shape (n, d)
        Image embeddings ``f(x)`` (normalised here).
    proba : array-like of shape (n, C)
        Class probabilities ``p(x)`` of the same samples.
    text_features : array-like of shape (C, d)
        Class text features ``T`` (normalised here), one row per column of ``proba``.

    Returns
    -------
    torch.Tensor of shape (n, 2 d), float32
        Unit-norm rows: the image embedding beside the probability-weighted mean of the class
        text features.

    Examples
    --------
    A sample sure of class 0 gets that class's text feature as its second half:

    >>> g = class_guided_features([[1.0, 0.0]], [[1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]])
    >>> (g * 2 ** 0.5).round().tolist()
    [[1.0, 0.0, 0.0, 1.0]]
    """
    f, p, T = as_tensor(features), as_tensor(proba), as_tensor(text_features)
    return F.normalize(torch.cat([F.normalize(f, dim=1), p @ F.normalize(T, dim=1)], dim=1), dim=1)


def cluster_balanced_order(cluster, sq_distance, n_labeled):
    """Pool positions in CB's order: the least-labeled cluster's nearest member, repeatedly.

    Parameters
    ----------
    cluster : array-like of int, shape (L + n,)
        Cluster of every point: the ``L`` labeled samples first, then the ``n`` pool samples.
    sq_distance : array-like of shape (L + n,)
        Squared distance of every point to its cluster's centroid.
    n_labeled : int
        ``L``.

    Yields
    ------
    int
        Pool positions (``0 .. n - 1``), each once, until the pool is exhausted. Each comes
        from the non-empty cluster with the lowest ratio ``(labeled + picked) / size`` (ties:
        the largest cluster, then the lowest index), and is that cluster's unpicked pool
        member nearest the centroid (ties: the lowest position).

    Examples
    --------
    Clusters 0 and 1 have 3 members each, one labeled in cluster 0: cluster 1 (ratio 0) gives
    its nearest member first, then both are at 1/3 and cluster 0 comes first by index:

    >>> order = cluster_balanced_order([0, 0, 0, 1, 1, 1], [0.0, 0.2, 0.1, 0.5, 0.3, 0.4], 1)
    >>> [int(i) for i in order]
    [3, 1, 4, 0, 2]
    """
    cluster, sq_distance = np.asarray(cluster, dtype=np.intp), np.asarray(sq_distance, dtype=np.float64)
    L = int(n_labeled)
    size = np.bincount(cluster)
    taken = np.bincount(cluster[:L], minlength=len(size))  # labeled, then also picked, members
    # Pool members grouped by cluster, nearest first; lexsort is stable, so ties keep position order.
    members = np.lexsort((sq_distance[L:], cluster[L:]))
    next_member = np.searchsorted(cluster[L:][members], np.arange(len(size)))
    heap = [(taken[k] / size[k], -int(size[k]), k) for k in np.flatnonzero(size).tolist()]
    heapq.heapify(heap)
    while heap and heap[0][0] < 1.0:  # ratio 1: every member labeled or picked
        _, neg_size, k = heapq.heappop(heap)
        yield int(members[next_member[k]])
        next_member[k] += 1
        taken[k] += 1
        heapq.heappush(heap, (taken[k] / size[k], neg_size, k))


def class_thresholds(labeled_proba, labeled_classes, n_classes) -> np.ndarray:
    """CB+SQ's per-class confidence thresholds.

    ``tau_c`` = the mean of ``max_c' p(c'|x)`` over the labeled samples labeled ``c``; ``inf``
    for a class without labeled samples (none of its predictions is trusted).

    Parameters
    ----------
    labeled_proba : array-like of shape (L, C) or None
        Current class probabilities of the labeled samples (None when ``L = 0``).
    labeled_classes : array-like of int, shape (L,)
        Column of each labeled sample's label.
    n_classes : int
        ``C``.

    Returns
    -------
    np.ndarray of shape (C,), float64
        ``tau_c`` per class; ``inf`` where the labeled set has no sample of the class.

    Examples
    --------
    >>> class_thresholds([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]], [0, 0, 0], 2).tolist()
    [0.7333333333333334, inf]
    """
    thresholds = np.full(n_classes, np.inf)
    labeled_classes = np.asarray(labeled_classes, dtype=np.intp)
    if labeled_proba is None or len(labeled_classes) == 0:
        return thresholds
    confidence = np.asarray(labeled_proba, dtype=np.float64).max(1)
    counts = np.bincount(labeled_classes, minlength=n_classes)
    sums = np.bincount(labeled_classes, weights=confidence, minlength=n_classes)
    thresholds[counts > 0] = sums[counts > 0] / counts[counts > 0]
    return thresholds


def selective_querying(order, confident, n_instances, max_pseudo_labels):
    """Split CB's order into oracle picks and pseudo-labeled picks.

    Walk ``order``: a ``confident`` pick is pseudo-labeled while fewer than
    ``max_pseudo_labels`` are, every other pick goes to the oracle, until ``n_instances`` have.
    If the order ends first, the last pseudo-labeled picks go to the oracle instead.

    Parameters
    ----------
    order : iterable of int
        Pool positions in picking order (:func:`cluster_balanced_order`).
    confident : array-like of bool, shape (n,)
        Whether each pool sample's confidence reaches its predicted class's threshold.
    n_instances : int
        Oracle picks to return.
    max_pseudo_labels : int
        Most pseudo-labeled picks.

    Returns
    -------
    oracle : np.ndarray of int, shape (n_instances,)
        The picks for the oracle, in picking order.
    pseudo : np.ndarray of int
        The pseudo-labeled picks, in picking order; disjoint from ``oracle``.

    Examples
    --------
    Sample 0 is confident and pseudo-labeled; 4 and 3 go to the oracle, which ends the walk:

    >>> oracle, pseudo = selective_querying([4, 0, 3, 1, 2], [True, False, True, False, False], 2, 5)
    >>> oracle.tolist(), pseudo.tolist()
    ([4, 3], [0])
    """
    confident = np.asarray(confident, dtype=bool)
    oracle, pseudo = [], []
    for position in order:
        if confident[position] and len(pseudo) < max_pseudo_labels:
            pseudo.append(position)
        else:
            oracle.append(position)
            if len(oracle) == n_instances:
                break
    while len(oracle) < n_instances and pseudo:  # a pool too small for the budget and the pseudo-labels
        oracle.append(pseudo.pop())
    return np.asarray(oracle, dtype=np.intp), np.asarray(pseudo, dtype=np.intp)


def _cluster(pool, n_instances, cluster_factor, rng):
    """k-means on the class-guided features of labeled set and pool; returns CB's order and
    the cluster of every pool sample."""
    L = pool.n_labeled
    G = class_guided_features(pool.features, pool.proba, pool.text_features)
    if L:
        labeled = class_guided_features(pool.labeled_features, pool.labeled_proba, pool.text_features)
        G = torch.cat([labeled, G])
    n_clusters = min(cluster_factor * n_instances + L, len(G))
    centers = weighted_kmeans(G, n_clusters, rng)
    index, sq_distance = nearest_centers(G, centers)
    cluster = index[:, 0].numpy()
    return cluster_balanced_order(cluster, sq_distance[:, 0].numpy(), L), cluster[L:]


def cb_query(classifier, X_pool, n_instances=1, *, random_state=None, cluster_factor=CB_CLUSTER_FACTOR,
             X_labeled=None, return_metrics=False):
    """CB: cluster-balanced picks on class-guided features (Kim et al., TMLR 2025).

    k-means with ``cluster_factor * n_instances + |L|`` clusters on
    ``normalize([f ; p T])`` of the labeled set and the pool; the least-labeled clusters give
    their samples nearest the centroid (see :mod:`modal_vlm.strategies.cb`). Works from round
    0 (zero-shot probabilities and text features).

    Parameters
    ----------
    classifier : modAL learner, ClipPromptClassifier or Pipeline ending in one
        Gives the pool's (and the labeled set's) embeddings, probabilities and the class text
        features (``class_text_features``); the labeled set is the learner's ``X_training``.
    X_pool : sequence
        Unlabeled pool, passed to the classifier as-is.
    n_instances : int, default=1
        Batch size ``b``.
    random_state : int, RandomState or None
        Seeds k-means.
    cluster_factor : int, default=1
        Clusters per queried sample beyond the labeled set (the authors': 1 for CB).
    X_labeled : sequence, optional
        Labeled images, instead of the learner's ``X_training`` (CB needs no labels).
    return_metrics : bool, default=False
        Return ``(indices, metrics)`` whatever the installed modAL expects.

    Returns
    -------
    indices or (indices, metrics)
        See :ref:`strategies-return`; ``metrics["cluster"]``: each pool sample's cluster.

    Raises
    ------
    ValueError
        ``X_pool`` is empty, ``n_instances`` is not an int in ``[1, len(X_pool)]``, or
        ``cluster_factor`` is not an int >= 1.
    TypeError
        The classifier has no ``transform`` or no ``class_text_features``.

    Examples
    --------
    >>> import numpy as np
    >>> from modal_vlm import ClipPromptClassifier
    >>> images = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    >>> clf = ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit", verbose=0)
    >>> idx, metrics = cb_query(clf, images, 3, random_state=0, return_metrics=True)
    >>> len(set(idx.tolist())), len(set(metrics["cluster"][idx].tolist()))
    (3, 3)
    """
    pool, n_instances, rng = prepare(classifier, X_pool, n_instances, random_state, X_labeled=X_labeled)
    check_int("cluster_factor", cluster_factor, 1)
    order, cluster = _cluster(pool, n_instances, cluster_factor, rng)
    picks = np.fromiter(order, dtype=np.intp, count=n_instances)
    return query_result(picks, {"cluster": cluster}, return_metrics)


def cbsq_query(classifier, X_pool, n_instances=1, *, random_state=None, cluster_factor=CBSQ_CLUSTER_FACTOR,
               max_pseudo_labels=None, X_labeled=None, y_labeled=None, return_metrics=False):
    """CB+SQ: CB with selective querying, which pseudo-labels confident picks (Kim et al., TMLR 2025).

    CB's order on ``cluster_factor * n_instances + |L|`` clusters; a pick whose confidence
    ``max p`` reaches its predicted class's threshold (the mean confidence of that class's
    labeled samples) is pseudo-labeled with the prediction instead of queried, and the order
    goes on until ``n_instances`` picks are left for the oracle (see
    :mod:`modal_vlm.strategies.cb`). Without labels there are no thresholds and it equals CB.

    Parameters
    ----------
    classifier : modAL learner, ClipPromptClassifier or Pipeline ending in one
        As for :func:`cb_query`; the labeled set (pseudo-labeled samples included) is the
        learner's ``X_training`` / ``y_training``.
    X_pool : sequence
        Unlabeled pool, passed to the classifier as-is.
    n_instances : int, default=1
        Oracle labels of the batch ``b``; pseudo-labeled picks come on top.
    random_state : int, RandomState or None
        Seeds k-means.
    cluster_factor : int, default=4
        Clusters per queried sample beyond the labeled set (the authors' 4; 1 without labels).
    max_pseudo_labels : int, optional
        Most pseudo-labels per call; default ``n_instances``. 0 disables selective querying.
    X_labeled, y_labeled : optional
        The labeled set (images and labels), instead of the learner's.
    return_metrics : bool, default=False
        Return ``(indices, metrics)`` whatever the installed modAL expects.

    Returns
    -------
    indices or (indices, metrics)
        ``indices``: the ``n_instances`` picks for the oracle. ``metrics``: ``"pseudo_labeled"``
        (pool positions, disjoint from ``indices``) and ``"pseudo_labels"`` (their labels, values
        of ``classes_``), per-sample ``"confidence"`` and ``"cluster"``, per-class
        ``"threshold"`` (``inf`` without labeled samples). With modAL 0.4.1 a learner's
        ``query`` returns the indices only: call the strategy with ``return_metrics=True`` to
        use the pseudo-labels (:func:`modal_vlm.experiment.run_active_learning` does).

    Raises
    ------
    ValueError
        As :func:`cb_query`; ``max_pseudo_labels`` not an int >= 0; labels of the labeled set
        outside the classifier's ``classes_``, or not one per labeled image.
    TypeError
        The classifier has no ``transform`` or no ``class_text_features``.

    Examples
    --------
    >>> import numpy as np
    >>> from modAL.models import ActiveLearner
    >>> from modal_vlm import ClipPromptClassifier
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8), np.arange(30) % 2
    >>> clf = ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit", max_epochs=2, verbose=0)
    >>> learner = ActiveLearner(estimator=clf, X_training=X[:4], y_training=y[:4])
    >>> idx, metrics = cbsq_query(learner, X[4:], 3, random_state=0, return_metrics=True)
    >>> pseudo = metrics["pseudo_labeled"]
    >>> len(idx), len(pseudo) <= 3, set(idx.tolist()).isdisjoint(pseudo.tolist())
    (3, True, True)
    >>> learner.teach(X[4:][np.concatenate([idx, pseudo])],
    ...               np.concatenate([y[4:][idx], metrics["pseudo_labels"]]))
    """
    pool, n_instances, rng = prepare(classifier, X_pool, n_instances, random_state, X_labeled=X_labeled,
                                     y_labeled=y_labeled)
    check_int("cluster_factor", cluster_factor, 1)
    max_pseudo_labels = n_instances if max_pseudo_labels is None else max_pseudo_labels
    check_int("max_pseudo_labels", max_pseudo_labels, 0)
    if pool.n_labeled and len(pool.labeled_none) != pool.n_labeled:
        raise ValueError(f"the labeled set has {pool.n_labeled} images but {len(pool.labeled_none)} labels.")
    n_classes, labeled_classes = pool.proba.shape[1], pool.labeled_positions()
    # Images labeled "none of these classes" tell no class's confidence.
    labeled_proba = None if pool.labeled_proba is None else pool.labeled_proba[~pool.labeled_none]
    thresholds = class_thresholds(labeled_proba, labeled_classes, n_classes)
    confidence, predicted = pool.proba.max(1), pool.proba.argmax(1)
    confident = confidence >= thresholds[predicted]
    # The authors' first round of CB+SQ is plain CB (alvlm.py 520-526): C clusters, no threshold.
    order, cluster = _cluster(pool, n_instances, cluster_factor if pool.n_labeled else CB_CLUSTER_FACTOR, rng)
    oracle, pseudo = selective_querying(order, confident, n_instances, max_pseudo_labels)
    metrics = {PSEUDO_LABELED: pseudo, PSEUDO_LABELS: pool.classes[predicted[pseudo]],
               "confidence": confidence, "cluster": cluster, "threshold": thresholds}
    return query_result(oracle, metrics, return_metrics)
