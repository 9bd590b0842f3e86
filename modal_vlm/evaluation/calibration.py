"""Confidence a person can trust: temperature scaling fitted on test-then-train pairs, and
the expected calibration error that measures it.

A prompt-tuned CLIP-like model is often sure of a wrong class: with CLIP's logit scale of 100
a cosine lead of 0.05 is already a 99 % softmax. Temperature scaling (Guo et al., ICML 2017)
divides the log-probabilities by one number ``T`` fitted by maximum likelihood on held-out
labels; it keeps every prediction (the argmax) and fixes the confidence. An active-learning
loop has held-out labels for free: every new label was predicted by the model *before* it
was taught (test-then-train), so its probabilities then and its label are an honest pair.
Measured in ``benchmarks/results/trust.md``.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

#: Temperatures are searched in this range (log scale): sharper than 20x or flatter than 50x
#: the model's own probabilities is not a calibration, it is a lack of data.
TEMPERATURE_RANGE = (0.05, 50.0)
#: Probabilities are clipped here before the log: float32 softmax underflows to 0.
_TINY = 1e-30


def _log_proba(proba) -> np.ndarray:
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] < 2:
        raise ValueError(f"proba must be 2-d (n_samples, n_classes >= 2), got shape {proba.shape}.")
    if not np.all(np.isfinite(proba)) or np.any(proba < 0):
        raise ValueError("proba holds negative, NaN or infinite values.")
    return np.log(np.clip(proba, _TINY, None))


def _softmax(logits) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    weights = np.exp(shifted)
    return weights / weights.sum(axis=1, keepdims=True)


def margin_scale(proba) -> float:
    """A model's typical margin: the mean gap between its two largest log-probabilities.

    Dividing a model's log-probabilities by its margin scale puts every model of a loop on one
    footing before temperature scaling (:func:`rescale`): a prompt learner sharpens as it learns
    (its best temperature falls severalfold over its first labels), while its temperature
    *relative to its own margin* moves much less, so pairs scored by earlier models calibrate
    the current one without lagging behind it. Measured in ``benchmarks/results/trust.md``
    (the calibration table, with and without the margin scale).

    Parameters
    ----------
    proba : array-like of shape (n_samples, n_classes)
        The model's probabilities on a sample of the pool (the stop set).

    Returns
    -------
    float
        The mean gap, in nats; 1.0 for no samples or no gap at all (nothing to normalise).

    Examples
    --------
    >>> round(margin_scale([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]), 3)   # (log(0.7/0.2) + log(0.6/0.3)) / 2
    0.973
    """
    if not len(proba):
        return 1.0
    ordered = np.sort(_log_proba(proba), axis=1)
    gap = float(np.mean(ordered[:, -1] - ordered[:, -2]))
    return gap if gap > 1e-6 else 1.0


def rescale(proba, scale) -> np.ndarray:
    """``softmax(log(proba) / scale)``: probabilities on the footing of :func:`margin_scale`.

    Parameters
    ----------
    proba : array-like of shape (n_samples, n_classes)
        A model's probabilities.
    scale : float or array-like of shape (n_samples,)
        That model's :func:`margin_scale` (one per row when the rows come from different models).

    Returns
    -------
    ndarray of float64 of shape (n_samples, n_classes)
        Rows summing to 1, with the same argmax as ``proba``.

    Examples
    --------
    >>> rescale([[0.8, 0.2]], 2.0).round(3).tolist()
    [[0.667, 0.333]]
    """
    if len(proba) == 0:
        return np.zeros(np.shape(proba), dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    return _softmax(_log_proba(proba) / (scale[:, None] if scale.ndim else scale))


def _label_positions(y, n_samples, n_classes) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n_samples,):
        raise ValueError(f"y must have shape ({n_samples},) like proba's rows, got {y.shape}.")
    if y.dtype.kind not in "iu" or np.any(y < 0) or np.any(y >= n_classes):
        raise ValueError(f"y must hold class positions 0..{n_classes - 1} (the columns of proba).")
    return y.astype(np.intp)


class TemperatureScaling:
    """Calibrate class probabilities as ``softmax(log(proba) / T)``, ``T`` fitted on held-out labels.

    ``T > 1`` softens an overconfident model, ``T < 1`` sharpens an underconfident one; the
    predicted class never changes. ``fit`` takes the probabilities a model gave *before* it
    saw the labels (a held-out set, cross-validation, or the test-then-train pairs of an
    active-learning loop: :class:`~modal_vlm.evaluation.LoopMonitor`).

    Parameters
    ----------
    min_samples : int, default=10
        Fewer labeled pairs than this leave the probabilities unchanged (``T = 1``) and
        ``fitted_`` False: a temperature from a handful of labels is noise.

    Attributes
    ----------
    temperature_ : float
        The fitted temperature, in :data:`TEMPERATURE_RANGE` (1.0 when not ``fitted_``).
    fitted_ : bool
        Whether ``temperature_`` comes from at least ``min_samples`` pairs.
    n_samples_ : int
        Pairs seen by ``fit``.
    log_temperature_se_ : float
        Standard error of ``log(temperature_)``, from the curvature of the (weighted)
        likelihood and the effective sample size; ``inf`` when not ``fitted_``. A few dozen
        labels leave the temperature uncertain by tens of percent, and estimates built on it
        must say so (:func:`~modal_vlm.evaluation.assess`).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> logits = 2 * rng.normal(size=(500, 3))
    >>> y = np.array([rng.choice(3, p=np.exp(z) / np.exp(z).sum()) for z in logits])  # the truth
    >>> proba = np.exp(4 * logits) / np.exp(4 * logits).sum(1, keepdims=True)  # 4x too sharp
    >>> scaler = TemperatureScaling().fit(proba, y)
    >>> round(scaler.temperature_, 1)
    4.4
    >>> bool((scaler.transform(proba).argmax(1) == proba.argmax(1)).all())
    True
    """

    def __init__(self, min_samples=10):
        self.min_samples = min_samples

    def fit(self, proba, y, sample_weight=None) -> TemperatureScaling:
        """Fit ``T`` by maximum likelihood (weighted negative log-likelihood of ``y``).

        Parameters
        ----------
        proba : array-like of shape (n_samples, n_classes)
            Held-out class probabilities.
        y : array-like of int, shape (n_samples,)
            True class positions (columns of ``proba``).
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights.

        Returns
        -------
        TemperatureScaling
            ``self``.

        Raises
        ------
        ValueError
            Malformed ``proba``, ``y`` or ``sample_weight``, or ``min_samples`` not an int >= 1.
        """
        if isinstance(self.min_samples, bool) or not isinstance(self.min_samples, (int, np.integer)) \
                or self.min_samples < 1:
            raise ValueError(f"min_samples must be an integer >= 1, got {self.min_samples!r}.")
        log_p = _log_proba(proba) if len(proba) else np.zeros((0, 2))
        y = _label_positions(y, len(log_p), log_p.shape[1])
        weight = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        if weight.shape != y.shape or np.any(weight < 0) or not np.all(np.isfinite(weight)):
            raise ValueError("sample_weight must be finite, non-negative, one weight per sample.")
        self.n_samples_ = len(y)
        self.fitted_ = len(y) >= self.min_samples and weight.sum() > 0
        self.temperature_, self.log_temperature_se_ = 1.0, float("inf")
        if self.fitted_:
            rows = np.arange(len(y))

            def nll(log_t):
                logits = log_p / np.exp(log_t)
                shifted = logits - logits.max(axis=1, keepdims=True)
                log_z = np.log(np.exp(shifted).sum(axis=1))
                return float(np.sum(weight * (log_z - shifted[rows, y])) / weight.sum())

            low, high = np.log(TEMPERATURE_RANGE)
            best = float(minimize_scalar(nll, bounds=(low, high), method="bounded", options={"xatol": 1e-4}).x)
            self.temperature_ = float(np.exp(best))
            step = 1e-2
            curvature = (nll(best + step) - 2 * nll(best) + nll(best - step)) / step ** 2
            n_effective = weight.sum() ** 2 / np.sum(weight ** 2)
            self.log_temperature_se_ = float(1 / np.sqrt(curvature * n_effective)) if curvature > 0 else float("inf")
        return self

    def transform(self, proba) -> np.ndarray:
        """Calibrated probabilities: ``softmax(log(proba) / temperature_)``.

        Parameters
        ----------
        proba : array-like of shape (n_samples, n_classes)
            Class probabilities of the model ``fit`` was fitted for.

        Returns
        -------
        ndarray of float64 of shape (n_samples, n_classes)
            Rows summing to 1, with the same argmax as ``proba``.
        """
        if not hasattr(self, "temperature_"):
            raise ValueError("this TemperatureScaling is not fitted yet: call fit first.")
        if len(proba) == 0:
            return np.zeros(np.shape(proba), dtype=np.float64)
        return _softmax(_log_proba(proba) / self.temperature_)


def expected_calibration_error(y_true, proba, n_bins=15) -> float:
    """Expected calibration error of the top-label confidence (Guo et al., 2017).

    The samples are binned by confidence (the maximum probability) into ``n_bins`` equal-width
    bins; the error is the sample-weighted mean over bins of ``|accuracy - mean confidence|``.
    0 is perfect; a model that says 90 % and is right half the time has 0.4.

    Parameters
    ----------
    y_true : array-like of int, shape (n_samples,)
        True class positions (columns of ``proba``).
    proba : array-like of shape (n_samples, n_classes)
        Class probabilities.
    n_bins : int, default=15
        Number of confidence bins over [0, 1].

    Returns
    -------
    float
        The expected calibration error, in [0, 1]; NaN for no samples.

    Examples
    --------
    >>> expected_calibration_error([0, 1], [[0.9, 0.1], [0.88, 0.12]])   # 89 % sure, right half the time
    0.39
    """
    proba = np.asarray(proba, dtype=np.float64)
    if len(proba) == 0:
        return float("nan")
    _log_proba(proba)   # validates the shape and values
    y = _label_positions(y_true, len(proba), proba.shape[1])
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y
    bins = np.clip((confidence * n_bins).astype(int), 0, n_bins - 1)
    error = 0.0
    for b in np.unique(bins):
        members = bins == b
        error += members.sum() * abs(correct[members].mean() - confidence[members].mean())
    return round(float(error / len(y)), 12)


__all__ = ["TEMPERATURE_RANGE", "TemperatureScaling", "expected_calibration_error", "margin_scale", "rescale"]
