"""How good is the model now? An accuracy estimate with an interval, without a test set.

Prediction-powered inference (Angelopoulos et al., Science 2023) for an accuracy: the
calibrated model predicts its own correctness on every unlabeled image (its calibrated
confidence), and a few labeled images measure how far those predictions are off (the
*rectifier*: right or wrong, minus the confidence the model had before it saw the label). The
estimate is the pool's mean confidence plus the mean rectifier; its interval comes from the
rectifier's spread over the labeled pairs (and, negligibly, the pool's). Any honest pairs
serve: random *audit* picks are unbiased by construction; the strategy's picks are honest in
``y`` given ``x`` (a strategy never sees the label) but not drawn like the pool. Which pairs
the loop uses by default, and how the interval covers, is measured in
``benchmarks/results/trust.md``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class AccuracyEstimate:
    """An accuracy estimate and its interval (a frozen dataclass; the fields are attributes).

    Parameters
    ----------
    accuracy : float
        The estimate, in [0, 1].
    low, high : float
        The interval, ``0 <= low <= accuracy <= high <= 1``.
    n : int
        Labeled images it rests on.
    level : float
        The interval's confidence level (0.9: 90 %).

    Examples
    --------
    >>> e = AccuracyEstimate(0.62, 0.54, 0.70, 24, 0.9)
    >>> e.as_dict()
    {'accuracy': 0.62, 'low': 0.54, 'high': 0.7, 'n': 24}
    >>> str(e)
    'about 62 % right (54-70 %), from 24 checked images'
    """

    accuracy: float
    low: float
    high: float
    n: int
    level: float = 0.9

    def as_dict(self) -> dict:
        """The JSON record of ``rounds.json`` and ``/api/state``.

        Returns
        -------
        dict
            ``accuracy``, ``low``, ``high`` (rounded to 6 digits) and ``n``.
        """
        return {"accuracy": round(float(self.accuracy), 6), "low": round(float(self.low), 6),
                "high": round(float(self.high), 6), "n": int(self.n)}

    def __str__(self) -> str:
        return (f"about {100 * self.accuracy:.0f} % right ({100 * self.low:.0f}-{100 * self.high:.0f} %), "
                f"from {self.n} checked image{'s' if self.n != 1 else ''}")


def _check_level(level) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) or not 0 < level < 1:
        raise ValueError(f"level must be a fraction in (0, 1), got {level!r}.")
    return float(level)


def prediction_powered_accuracy(pool_confidence, confidence, correct, level=0.9, weight=None, extra_variance=0.0):
    """Prediction-powered estimate of a classifier's accuracy on a pool, with its interval.

    ``accuracy = mean(pool_confidence) + mean(correct - confidence)``, the interval from a
    Student t with the rectifier's standard error and the pool's.

    Parameters
    ----------
    pool_confidence : array-like of shape (n_pool,)
        The model's calibrated confidence (the probability of its predicted class) on the
        images whose accuracy is estimated.
    confidence : array-like of shape (n,)
        Calibrated confidence on the labeled images, given *before* their labels were known
        to the model (held out).
    correct : array-like of bool, shape (n,)
        Whether the prediction on each labeled image was right.
    level : float, default=0.9
        Confidence level of the interval.
    weight : array-like of shape (n,), optional
        Non-negative weights of the labeled pairs (e.g. down-weighting older rounds);
        the effective sample size then replaces ``n`` in the standard error.
    extra_variance : float, default=0.0
        Variance of the pool's mean confidence from elsewhere (the uncertainty of a fitted
        calibration), added to the estimate's.

    Returns
    -------
    AccuracyEstimate or None
        None with fewer than 2 labeled pairs (no spread to measure).

    Examples
    --------
    >>> est = prediction_powered_accuracy([0.7] * 1000, [0.6, 0.5, 0.8, 0.4] * 5,
    ...                                   [True, False, True, True] * 5)
    >>> round(est.accuracy, 3), est.n
    (0.875, 20)
    """
    level = _check_level(level)
    pool_confidence = np.asarray(pool_confidence, dtype=float)
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    if confidence.shape != correct.shape or confidence.ndim != 1:
        raise ValueError("confidence and correct must be 1-d of the same length.")
    w = np.ones(len(correct)) if weight is None else np.asarray(weight, dtype=float)
    if w.shape != correct.shape or np.any(w < 0):
        raise ValueError("weight must hold one non-negative weight per labeled pair.")
    keep = w > 0
    confidence, correct, w = confidence[keep], correct[keep], w[keep]
    if len(correct) < 2 or not len(pool_confidence):
        return None
    w = w / w.sum()
    residual = correct - confidence
    rectifier = float(np.sum(w * residual))
    n_eff = 1.0 / float(np.sum(w ** 2))
    spread = float(np.sum(w * (residual - rectifier) ** 2)) * n_eff / max(n_eff - 1, 1e-12)
    variance = spread / n_eff + float(np.var(pool_confidence, ddof=0)) / len(pool_confidence) + float(extra_variance)
    half = float(stats.t.ppf(0.5 + level / 2, df=max(n_eff - 1, 1))) * np.sqrt(variance)
    accuracy = float(np.clip(pool_confidence.mean() + rectifier, 0, 1))
    return AccuracyEstimate(accuracy, max(0.0, accuracy - half), min(1.0, accuracy + half), len(correct), level)


def audit_accuracy(correct, level=0.9):
    """Accuracy of random audit picks with a Wilson score interval (no model in the estimate).

    Parameters
    ----------
    correct : array-like of bool, shape (n,)
        Whether the model was right on each audited image (scored before it saw the label).
    level : float, default=0.9
        Confidence level of the interval.

    Returns
    -------
    AccuracyEstimate or None
        None without audited images.

    Examples
    --------
    >>> est = audit_accuracy([True] * 15 + [False] * 9)
    >>> round(est.accuracy, 3), round(est.low, 3), round(est.high, 3)
    (0.625, 0.458, 0.767)
    """
    level = _check_level(level)
    correct = np.asarray(correct, dtype=float)
    n = len(correct)
    if n == 0:
        return None
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = float(correct.mean())
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * float(np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)
    return AccuracyEstimate(p, max(0.0, centre - half), min(1.0, centre + half), n, level)


__all__ = ["AccuracyEstimate", "audit_accuracy", "prediction_powered_accuracy"]
