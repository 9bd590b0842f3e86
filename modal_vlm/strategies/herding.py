"""Kernel herding for active learning: MaxHerding (Bae, Noh & Sutherland, "Generalized
Coverage for More Robust Low-Budget Active Learning", ECCV 2024) and Uncertainty Herding
(Bae, Oliveira & Sutherland, "Uncertainty Herding: One Active Learning Method for All Label
Budgets", ICLR 2025).

Both greedily maximise a kernel coverage of the pool by the labeled set ``S``,

.. math::

    C(S) = \\sum_x w(x) \\max_{s \\in S} k(x, s), \\qquad
    k(x, s) = \\exp\\big(-\\|f(x) - f(s)\\|^2 / \\sigma^2\\big),

on L2-normalised embeddings ``f``: each pick is the candidate ``c`` of largest gain
``sum_x w(x) [k(x, c) - max_s k(x, s)]_+``. MaxHerding weighs every sample alike
(``w = 1``: a smooth, generalised ProbCover); Uncertainty Herding weighs each by the current
model's margin uncertainty ``w = 1 - (p_(1) - p_(2))``, so that the picks cover the
uncertain regions, and it narrows the kernel as the labeled set grows (below), moving from
coverage at low budgets towards uncertainty sampling at high ones.

The rules are the authors' (``BorealisAI/uherding``, ``deep-al/pycls/al/herding.py``,
``uherding.py``, ``calibration/temperature_scaling.py``, ``tools/train_al.py``,
``tools/scripts/run_budget.sh``):

* the kernel width ``sigma = 1`` (MaxHerding; the scripts' ``delta=1.0`` with
  ``exp(-(d / delta)^2)``); Uncertainty Herding's adaptive width is the smallest non-zero
  distance between two labeled samples, and 1 while fewer than two are labeled;
* the uncertainty is the margin of temperature-scaled probabilities, the temperature the
  ``T`` in ``1.0, 1.1, ..., 19.9`` of lowest expected calibration error (one bin per class)
  of a copy of the model trained on the first 70 % of the labeled set (in labeling order),
  measured on the other 30 %; with no label every weight is 1 (it starts as MaxHerding);
* at most 35,000 pool samples (a uniform sample, the authors' ``compute_cand_size``) are
  both the candidates and the samples to cover.

Computed without any ``n x n`` matrix: the first gains in blocks of candidates (``m^2 d``
multiply-adds for ``m`` candidates), the later ones by lazy greedy (the coverage is
submodular, so a gain only falls as ``S`` grows: stale gains are upper bounds, and only the
candidates whose bound could win are re-scored). The picks are those of the plain greedy
up to ties. scikit-activeml's ``MaxHerding`` (1.0) defaults to scikit-learn's RBF width
(``gamma = 1 / d``) and covers the candidates only; ``tests/strategies/test_reference.py``
checks that both pick the same samples at equal width. scikit-activeml 1.0 has no
Uncertainty Herding.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.base import clone
from sklearn.utils import _safe_indexing

from ._linalg import row_blocks, unit_rows
from .._validation import check_int, check_number
from ..embeddings.disk import as_tensor
from ._pool import prepare
from ._result import query_result

#: The authors' MaxHerding kernel width on unit embeddings.
SIGMA = 1.0
#: The authors' cap on the candidates (and on the samples they cover).
MAX_CANDIDATES = 35_000
#: Temperatures searched by Uncertainty Herding's calibration (the authors' grid).
TEMPERATURES = np.round(np.arange(1.0, 20.0, 0.1), 1)
#: Share of the labeled set held out to calibrate the temperature.
VALIDATION_SHARE = 0.3
#: Candidates re-scored at once by the lazy greedy.
LAZY_BLOCK = 64


def candidate_count(n_labeled: int, n_instances: int, max_candidates: int = MAX_CANDIDATES) -> int:
    """Size of the candidate sample: the authors' ``compute_cand_size`` (an ``(m + L + b)^2``
    kernel within a fixed memory), at most ``max_candidates``, at least ``n_instances``.

    Parameters
    ----------
    n_labeled : int
        Size ``L`` of the labeled set.
    n_instances : int
        Batch size ``b``.
    max_candidates : int or None, default=35000
        Cap (None: the authors' formula alone).

    Returns
    -------
    int
        The number of candidates ``m``.

    Examples
    --------
    >>> candidate_count(0, 10), candidate_count(100, 10, max_candidates=None)
    (35000, 44835)
    """
    bound = 45_000 * (35_000 + 10_000)
    size = int((bound + (n_labeled + n_instances) ** 2 / 4) ** 0.5 - 1.5 * (n_labeled + n_instances))
    return max(size if max_candidates is None else min(max_candidates, size), n_instances)


def _kernel(A, B, sigma):
    # Unit rows: ||a - b||^2 = 2 - 2 <a, b>.
    return torch.exp(-(2.0 - 2.0 * (A @ B.T)).clamp_min(0.0) / (sigma * sigma))


def _gains(C, rows, m, w, sigma):
    """Exact gains ``sum_x w(x) [k(x, c) - m(x)]_+`` of the candidates ``rows`` of ``C``."""
    out = torch.empty(len(rows), dtype=torch.float64)
    for block in row_blocks(len(rows), 4 * len(C)):
        K = _kernel(C[rows[block]], C, sigma)
        out[block] = ((K - m).clamp_min_(0.0) @ w).double()
    return out


def kernel_herding(features, n_instances, rng, *, labeled_features=None, weights=None, sigma=SIGMA,
                   max_candidates=MAX_CANDIDATES):
    """Greedy weighted kernel coverage: ``(picks, first gain of every pool sample)``.

    Parameters
    ----------
    features : array-like of shape (n, d)
        Embeddings of the unlabeled pool (normalised here).
    n_instances : int
        Picks to make (at most ``n``).
    rng : numpy.random.RandomState
        Draws the candidate sample on pools above its size.
    labeled_features : array-like of shape (L, d), optional
        Embeddings of the labeled set, which covers first.
    weights : array-like of shape (n,), optional
        Non-negative weight of every pool sample in the coverage (default 1).
    sigma : float, default=1.0
        Kernel width.
    max_candidates : int or None, default=35000
        See :func:`candidate_count`; None: the whole pool.

    Returns
    -------
    picks : np.ndarray of shape (n_instances,)
        Distinct pool indices, in the order picked.
    gain : np.ndarray of shape (n,), float32
        Each candidate's gain before the first pick (NaN outside the candidate sample).

    Examples
    --------
    Three unit vectors: the middle one covers both others best, then the far one gains most.

    >>> import numpy as np
    >>> F = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    >>> kernel_herding(F, 2, np.random.RandomState(0))[0].tolist()
    [1, 2]
    """
    F = unit_rows(features)
    n = len(F)
    n_labeled = 0 if labeled_features is None else len(labeled_features)
    size = candidate_count(n_labeled, n_instances, max_candidates)
    cand = np.sort(rng.choice(n, size, replace=False)) if n > size else np.arange(n)
    C = F[torch.as_tensor(cand)]
    w = torch.ones(len(C)) if weights is None else torch.as_tensor(np.asarray(weights, np.float32)[cand])
    m = torch.zeros(len(C))  # each candidate's coverage so far
    if n_labeled:
        L = torch.nn.functional.normalize(as_tensor(labeled_features), dim=1)
        for block in row_blocks(len(L), 4 * len(C)):
            m = torch.maximum(m, _kernel(L[block], C, sigma).max(0).values)
    every = torch.arange(len(C))
    bound = _gains(C, every, m, w, sigma)
    first = bound.numpy().astype(np.float32)
    picked = torch.zeros(len(C), dtype=torch.bool)
    picks = []
    for step in range(n_instances):
        while True:
            open_bound = bound.masked_fill(picked, -np.inf)
            top = torch.topk(open_bound, min(LAZY_BLOCK + 1, len(C) - step)).indices
            scored, rest = top[:LAZY_BLOCK], top[LAZY_BLOCK:]
            if step:  # the first gains are exact; later ones are re-scored before they win
                bound[scored] = _gains(C, scored, m, w, sigma)
            best = scored[torch.argmax(bound[scored])]
            if not len(rest) or bound[best] >= bound[rest[0]]:
                break
        picked[best] = True
        picks.append(int(best))
        m = torch.maximum(m, _kernel(C[best:best + 1], C, sigma)[0])
    gain = np.full(n, np.nan, dtype=np.float32)
    gain[cand] = first
    return cand[np.asarray(picks, dtype=np.intp)], gain


def margin_uncertainty(proba, temperature=1.0) -> np.ndarray:
    """``1 - (q_(1) - q_(2))`` of the temperature-scaled probabilities ``q = softmax(log p / T)``.

    Parameters
    ----------
    proba : array-like of shape (n, C)
        Class probabilities.
    temperature : float, default=1.0
        ``T``: above 1 flattens the probabilities (more uncertainty), 1 keeps them.

    Returns
    -------
    np.ndarray of shape (n,), float32
        Uncertainty in ``[0, 1]`` (1: a tie between the two most likely classes).

    Examples
    --------
    >>> margin_uncertainty([[0.5, 0.3, 0.2], [1.0, 0.0, 0.0]]).round(2)
    array([0.8, 0. ], dtype=float32)
    """
    q = _scaled(np.asarray(proba, dtype=np.float64), temperature)
    top2 = np.sort(q, axis=1)[:, -2:] if q.shape[1] > 1 else np.concatenate([np.zeros((len(q), 1)), q], 1)
    return (1.0 - (top2[:, 1] - top2[:, 0])).astype(np.float32)


def _scaled(proba, temperature):
    logits = np.log(np.clip(proba, 1e-30, None)) / temperature
    logits -= logits.max(1, keepdims=True)
    q = np.exp(logits)
    return q / q.sum(1, keepdims=True)


def expected_calibration_error(proba, y, classes, n_bins=None) -> float:
    """ECE of the top-class confidence in ``n_bins`` equal bins ``(lower, upper]``
    (default: one per class, the authors' ``ECELoss``).

    Parameters
    ----------
    proba : array-like of shape (n, C)
        Class probabilities.
    y : array-like of shape (n,)
        True labels, values of ``classes``.
    classes : array-like of shape (C,)
        The label of each column of ``proba``.
    n_bins : int, optional
        Confidence bins; default ``C``.

    Returns
    -------
    float
        The bin-size weighted mean of ``|confidence - accuracy|``.

    Examples
    --------
    >>> expected_calibration_error([[0.9, 0.1], [0.6, 0.4]], [0, 1], [0, 1])
    0.25
    """
    proba = np.asarray(proba, dtype=np.float64)
    n_bins = proba.shape[1] if n_bins is None else n_bins
    confidence = proba.max(1)
    correct = np.asarray(classes)[proba.argmax(1)] == np.asarray(y)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            ece += inside.mean() * abs(confidence[inside].mean() - correct[inside].mean())
    return round(float(ece), 12)


def calibrated_temperature(estimator, X_labeled, y_labeled) -> float:
    """Uncertainty Herding's temperature: a copy of ``estimator`` trained on the first 70 %
    of the labeled set, and the ``T`` of :data:`TEMPERATURES` with the lowest
    :func:`expected_calibration_error` of its probabilities on the other 30 %.

    Parameters
    ----------
    estimator : scikit-learn classifier
        The learner's estimator (a ClipPromptClassifier or a Pipeline ending in one), cloned.
    X_labeled : sequence
        The labeled samples, in labeling order.
    y_labeled : array-like of shape (L,)
        Their labels.

    Returns
    -------
    float
        The temperature; 1 when the labeled set is too small to split (fewer than 4).

    Raises
    ------
    TypeError
        ``estimator`` cannot be cloned and refitted (then pass a fixed ``temperature``).
    """
    y_labeled = np.asarray(y_labeled)
    n_val = int(VALIDATION_SHARE * len(y_labeled))
    if n_val < 1 or len(y_labeled) - n_val < 1:
        return 1.0
    train, val = np.arange(len(y_labeled) - n_val), np.arange(len(y_labeled) - n_val, len(y_labeled))
    try:
        model = clone(estimator).fit(_safe_indexing(X_labeled, train), y_labeled[train])
    except TypeError as error:
        raise TypeError(f"temperature='auto' trains a copy of the estimator ({error}); pass a fixed "
                        "temperature, e.g. temperature=1.0.") from error
    proba = np.asarray(model.predict_proba(_safe_indexing(X_labeled, val)), dtype=np.float64)
    classes = getattr(model, "classes_", np.arange(proba.shape[1]))
    errors = [expected_calibration_error(_scaled(proba, T), y_labeled[val], classes) for T in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(errors))])


def smallest_labeled_distance(labeled_features):
    """The smallest non-zero distance between two labeled samples (unit embeddings), or
    None with fewer than two distinct ones: Uncertainty Herding's adaptive width.

    Distances are taken from the differences (not from ``2 - 2 cos``, whose float32 rounding
    leaves a sample up to ``1e-3`` from itself), so only exact duplicates count as zero, as
    in the authors' ``torch.cdist``.

    Parameters
    ----------
    labeled_features : array-like of shape (L, d) or None
        Embeddings of the labeled set.

    Returns
    -------
    float or None
        The distance, None with fewer than two distinct samples.

    Examples
    --------
    >>> round(smallest_labeled_distance([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8]]), 4)
    0.8944
    """
    if labeled_features is None or len(labeled_features) < 2:
        return None
    L = torch.nn.functional.normalize(as_tensor(labeled_features), dim=1)
    best = np.inf
    for block in row_blocks(len(L), 4 * len(L)):
        d = torch.cdist(L[block], L, compute_mode="donot_use_mm_for_euclid_dist")
        d = d[d > 0]
        if len(d):
            best = min(best, float(d.min()))
    return None if best == np.inf else best


def maxherding_query(classifier, X_pool, n_instances=1, *, random_state=None, sigma=SIGMA,
                     max_candidates=MAX_CANDIDATES, return_metrics=False):
    """MaxHerding query: the samples that most increase the kernel coverage of the pool.

    A low-budget method: it reads only the embeddings.

    Parameters
    ----------
    classifier : modAL learner, ClipPromptClassifier or Pipeline ending in one
        Its ``transform`` gives the embeddings; a learner's ``X_training`` is the labeled set.
    X_pool : sequence
        Unlabeled pool.
    n_instances : int, default=1
        Batch size, at most ``len(X_pool)``.
    random_state : int, RandomState or None
        Draws the candidate sample on pools above ``max_candidates``.
    sigma : float, default=1.0
        Kernel width on unit embeddings (the authors' 1).
    max_candidates : int or None, default=35000
        Candidates (and covered samples): a uniform sample of the pool above this size;
        None: the whole pool (``n^2 d`` work for the first gains).
    return_metrics : bool, default=False
        Return ``(indices, metrics)`` whatever the installed modAL expects.

    Returns
    -------
    indices or (indices, metrics)
        See :ref:`strategies-return`; ``metrics["gain"]``: each candidate's coverage gain
        before the batch (NaN outside the candidate sample).

    Raises
    ------
    ValueError
        ``X_pool`` is empty, ``n_instances`` is not an int in ``[1, len(X_pool)]``,
        ``sigma`` is not > 0 or ``max_candidates`` not None or >= 1.
    TypeError
        The classifier has no ``transform`` (herding needs image embeddings).

    Examples
    --------
    >>> import numpy as np
    >>> from modal_vlm import ClipPromptClassifier
    >>> images = np.random.default_rng(0).integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    >>> clf = ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit", verbose=0)
    >>> idx, metrics = maxherding_query(clf, images, 3, random_state=0, return_metrics=True)
    >>> bool(metrics["gain"][idx[0]] == np.nanmax(metrics["gain"]))
    True
    """
    check_number("sigma", sigma)
    check_int("max_candidates", max_candidates, allow_none=True)
    pool, n_instances, rng = prepare(classifier, X_pool, n_instances, random_state)
    picks, gain = kernel_herding(pool.features, n_instances, rng, labeled_features=pool.labeled_features,
                                 sigma=sigma, max_candidates=max_candidates)
    return query_result(picks, {"gain": gain}, return_metrics)


def uherding_query(classifier, X_pool, n_instances=1, *, random_state=None, sigma="auto", temperature="auto",
                   max_candidates=MAX_CANDIDATES, return_metrics=False):
    """Uncertainty Herding query: kernel coverage of the pool weighted by margin uncertainty.

    Parameters
    ----------
    classifier : modAL learner, ClipPromptClassifier or Pipeline ending in one
        Gives the embeddings, the probabilities and the labeled set; with
        ``temperature="auto"`` its estimator is cloned and trained on part of the labeled set.
    X_pool : sequence
        Unlabeled pool.
    n_instances : int, default=1
        Batch size, at most ``len(X_pool)``.
    random_state : int, RandomState or None
        Draws the candidate sample on pools above ``max_candidates``.
    sigma : "auto" or float, default="auto"
        Kernel width on unit embeddings. "auto": the smallest non-zero distance between two
        labeled samples (the authors' adaptive width), 1 with fewer than two.
    temperature : "auto" or float, default="auto"
        Temperature of the probabilities in the uncertainty. "auto": the authors'
        calibration (module docstring), which trains a copy of the estimator on 70 % of the
        labeled set each query (1 below 4 labels); a number fixes it (1: the probabilities
        as they are).
    max_candidates : int or None, default=35000
        See :func:`maxherding_query`.
    return_metrics : bool, default=False
        Return ``(indices, metrics)`` whatever the installed modAL expects.

    Returns
    -------
    indices or (indices, metrics)
        See :ref:`strategies-return`; ``metrics["uncertainty"]`` (each sample's weight),
        ``metrics["gain"]`` (as :func:`maxherding_query`'s), ``metrics["sigma"]`` and
        ``metrics["temperature"]`` (the values used).

    Raises
    ------
    ValueError
        ``X_pool`` is empty, ``n_instances`` is not an int in ``[1, len(X_pool)]``,
        ``sigma`` / ``temperature`` are neither "auto" nor > 0, or ``max_candidates`` is
        not None or >= 1.
    TypeError
        The classifier has no ``transform``, or ``temperature="auto"`` meets an estimator
        that cannot be cloned.

    Examples
    --------
    Before any label every weight is 1: the picks are MaxHerding's.

    >>> import numpy as np
    >>> from modal_vlm import ClipPromptClassifier
    >>> images = np.random.default_rng(0).integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    >>> clf = ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit", verbose=0)
    >>> idx, metrics = uherding_query(clf, images, 3, random_state=0, return_metrics=True)
    >>> bool((idx == maxherding_query(clf, images, 3, random_state=0)).all()), metrics["sigma"]
    (True, 1.0)
    """
    check_number("sigma", sigma, auto=True)
    check_number("temperature", temperature, auto=True)
    check_int("max_candidates", max_candidates, allow_none=True)
    pool, n_instances, rng = prepare(classifier, X_pool, n_instances, random_state)
    labeled = pool.labeled_features
    if sigma == "auto":
        sigma = smallest_labeled_distance(labeled) or SIGMA
    if pool.n_labeled == 0:
        temperature, weights = 1.0, np.ones(pool.n, dtype=np.float32)
    else:
        if temperature == "auto":
            temperature = calibrated_temperature(pool.estimator, pool.X_training, pool.y_training)
        weights = margin_uncertainty(pool.proba, temperature)
    picks, gain = kernel_herding(pool.features, n_instances, rng, labeled_features=labeled, weights=weights,
                                 sigma=sigma, max_candidates=max_candidates)
    metrics = {"uncertainty": weights, "gain": gain, "sigma": float(sigma), "temperature": float(temperature)}
    return query_result(picks, metrics, return_metrics)
