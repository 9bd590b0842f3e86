"""From test-then-train pairs to what a person is shown: the calibrator, the accuracy estimate
and the suspect labels, in one call that every front end shares (the runner's
:class:`~modal_vlm.evaluation.LoopMonitor`, the labeling app, a Label Studio backend).

A *pair* is one labeled image: the probabilities the model gave it before it learned its
label, the label, how many labels that model had been trained on, and whether the image was
an audit pick (drawn at random). The choices made here (which pairs calibrate, which
estimate, which flag) are measured in ``benchmarks/results/trust.md``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .calibration import TemperatureScaling
from .estimate import AccuracyEstimate, prediction_powered_accuracy
from .suspects import DEFAULT_SUSPECT_RATIO, suspect_order, suspicion


@dataclass(frozen=True)
class Assessment:
    """What :func:`assess` found (a frozen dataclass; the fields are attributes).

    Parameters
    ----------
    calibrator : TemperatureScaling
        Fitted on the pairs: ``calibrator.transform(model.predict_proba(X))`` is the
        confidence to show.
    estimate : AccuracyEstimate or None
        The current model's accuracy on the pool, with its interval; None before two pairs.
    suspects : ndarray of int
        Positions of the suspect pairs, most suspect first.
    suspicion : ndarray of float
        Every pair's :func:`~modal_vlm.evaluation.suspicion` (0: the model agreed).
    """

    calibrator: TemperatureScaling
    estimate: AccuracyEstimate | None
    suspects: np.ndarray
    suspicion: np.ndarray


def assess(held_out_proba, labels, pool_proba, *, level=0.9, suspect_ratio=DEFAULT_SUSPECT_RATIO) -> Assessment:
    """Calibrate, estimate the accuracy on the pool and flag suspect labels, from the pairs.

    Parameters
    ----------
    held_out_proba : array-like of shape (n, n_classes)
        Each labeled image's probabilities under the model that had not learned it yet.
    labels : array-like of int, shape (n,)
        The labels given, as class positions.
    pool_proba : array-like of shape (n_pool, n_classes)
        The current model's probabilities on the images whose accuracy is estimated (the
        unlabeled pool).
    level : float, default=0.9
        Confidence level of the estimate's interval.
    suspect_ratio : float, default=DEFAULT_SUSPECT_RATIO
        See :func:`~modal_vlm.evaluation.suspect_order`.

    Returns
    -------
    Assessment

    Examples
    --------
    >>> import numpy as np
    >>> held_out = np.full((40, 3), 0.05); held_out[np.arange(40), np.arange(40) % 3] = 0.9
    >>> labels = np.arange(40) % 3; labels[:4] = (labels[:4] + 1) % 3   # four slips
    >>> found = assess(held_out, labels, held_out)
    >>> found.estimate.n, sorted(found.suspects.tolist())
    (40, [0, 1, 2, 3])
    """
    held_out = np.asarray(held_out_proba, dtype=float)
    labels = np.asarray(labels, dtype=np.intp)
    calibrator = TemperatureScaling().fit(held_out, labels)
    estimate, ranked, score = None, np.zeros(0, dtype=np.intp), np.zeros(0)
    if len(labels):
        calibrated = calibrator.transform(held_out)
        pool = calibrator.transform(pool_proba) if len(pool_proba) else np.zeros((0, held_out.shape[1]))
        estimate = prediction_powered_accuracy(pool.max(axis=1), calibrated.max(axis=1),
                                               calibrated.argmax(axis=1) == labels, level=level)
        score = suspicion(calibrated, labels)
        ranked = suspect_order(calibrated, labels, suspect_ratio)
    return Assessment(calibrator, estimate, ranked, score)


__all__ = ["Assessment", "assess"]
