"""Open-set evaluation: accuracy on known classes and OOD detection quality.

Conventions shared with :mod:`modal_vlm.datasets`: labels ``0 .. n_known - 1`` are known
(in-distribution, ID) classes and :data:`OOD_LABEL` (-1) marks out-of-distribution (OOD)
samples. Scores are in-distribution scores, "higher = more in-distribution" (scikit-learn's
outlier convention), e.g. the maximum softmax probability over the known classes that
:meth:`~modal_vlm.ClipPromptClassifier.score_samples` returns.
"""
from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import recall_score, roc_auc_score, roc_curve

from .datasets import OOD_LABEL

#: True positive rate at which :func:`ood_metrics` reads the false positive rate.
TPR_LEVEL = 0.95


def ood_metrics(scores, is_id) -> dict[str, float]:
    """AUROC and FPR at 95 % TPR of an in-distribution score, in-distribution being the positive class.

    ``fpr_at_95_tpr`` is the smallest false positive rate (fraction of OOD samples
    accepted) over all thresholds ``t`` of the rule "ID if score >= t" whose true positive
    rate (fraction of ID samples accepted) is at least 0.95. Tied scores share a threshold,
    so they are accepted or rejected together.

    Parameters
    ----------
    scores : array-like of shape (n_samples,)
        In-distribution scores, higher meaning more in-distribution (as
        :meth:`~modal_vlm.ClipPromptClassifier.score_samples` returns them).
    is_id : array-like of bool of shape (n_samples,)
        True for in-distribution samples.

    Returns
    -------
    dict
        ``{"auroc": float, "fpr_at_95_tpr": float}``.

    Raises
    ------
    ValueError
        If the shapes differ, a score is not finite, or the samples are all ID or all OOD
        (both metrics are then undefined).

    Examples
    --------
    >>> ood_metrics([0.9, 0.8, 0.7, 0.2], [True, True, False, False])
    {'auroc': 1.0, 'fpr_at_95_tpr': 0.0}
    """
    scores = np.asarray(scores, dtype=float)
    is_id = np.asarray(is_id)
    # Booleans only: passing labels (e.g. a y_test holding -1 for OOD) by mistake would
    # otherwise be read as "non-zero = ID" and give plausible but wrong numbers.
    if is_id.dtype != bool:
        raise ValueError(f"is_id must be boolean, got dtype {is_id.dtype}")
    if scores.ndim != 1 or scores.shape != is_id.shape:
        raise ValueError(
            f"scores and is_id must be 1-D of the same length, "
            f"got shapes {scores.shape} and {is_id.shape}"
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite")
    n_id = int(is_id.sum())
    if n_id == 0 or n_id == is_id.size:
        raise ValueError(
            f"OOD metrics need both ID and OOD samples, got {n_id} ID and "
            f"{is_id.size - n_id} OOD"
        )
    fpr, tpr, _ = roc_curve(is_id, scores, drop_intermediate=False)
    return {
        "auroc": float(roc_auc_score(is_id, scores)),
        "fpr_at_95_tpr": float(fpr[tpr >= TPR_LEVEL].min()),
    }


def classification_metrics(y_true, y_pred) -> dict[str, float]:
    """Accuracy and mean per-class accuracy (the mean of the per-class recalls).

    The mean runs over the classes present in ``y_true``; predicting a class that never
    occurs in ``y_true`` only counts as an error.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        True and predicted labels.

    Returns
    -------
    dict
        ``{"accuracy": float, "mean_per_class_accuracy": float}``.

    Raises
    ------
    ValueError
        If the inputs are empty or of different lengths.

    Examples
    --------
    >>> classification_metrics([0, 0, 0, 1], [0, 0, 0, 0])
    {'accuracy': 0.75, 'mean_per_class_accuracy': 0.5}
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(
            f"y_true and y_pred must be non-empty 1-D arrays of the same length, "
            f"got shapes {y_true.shape} and {y_pred.shape}"
        )
    return {
        "accuracy": float(np.mean(y_true == y_pred)),
        "mean_per_class_accuracy": float(
            recall_score(y_true, y_pred, labels=np.unique(y_true), average="macro")
        ),
    }


def evaluate_open_set(y_true, y_pred, scores, ood_label: int = OOD_LABEL) -> dict[str, float]:
    """All open-set metrics at once: accuracy on the ID samples and OOD detection.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels, ``ood_label`` marking OOD samples.
    y_pred : array-like of shape (n_samples,)
        Predicted known classes (those of OOD samples are ignored).
    scores : array-like of shape (n_samples,)
        In-distribution scores, higher meaning more in-distribution (``score_samples``).
    ood_label : int, default=-1
        Label of the OOD samples in ``y_true``.

    Returns
    -------
    dict
        ``accuracy`` and ``mean_per_class_accuracy`` over the ID samples (see
        :func:`classification_metrics`), ``auroc`` and ``fpr_at_95_tpr`` (see
        :func:`ood_metrics`). Without OOD samples (a closed-set test split) the two
        OOD metrics are NaN.

    Raises
    ------
    ValueError
        If the lengths differ or there is no ID sample.

    Examples
    --------
    >>> import numpy as np
    >>> proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.5, 0.5]])
    >>> metrics = evaluate_open_set([0, 1, 0, -1], proba.argmax(axis=1), proba.max(axis=1))
    >>> {name: round(value, 3) for name, value in metrics.items()}
    {'accuracy': 0.667, 'mean_per_class_accuracy': 0.75, 'auroc': 1.0, 'fpr_at_95_tpr': 0.0}
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    scores = np.asarray(scores, dtype=float)
    if not y_true.shape == y_pred.shape == scores.shape or y_true.ndim != 1:
        raise ValueError(
            f"y_true, y_pred and scores must be 1-D of the same length, got shapes "
            f"{y_true.shape}, {y_pred.shape} and {scores.shape}"
        )
    is_id = y_true != ood_label
    if not is_id.any():
        raise ValueError(f"no in-distribution sample (every label is {ood_label})")
    metrics = classification_metrics(y_true[is_id], y_pred[is_id])
    if is_id.all():
        metrics.update(auroc=math.nan, fpr_at_95_tpr=math.nan)
    else:
        metrics.update(ood_metrics(scores, is_id))
    return metrics
