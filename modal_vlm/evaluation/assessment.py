"""From test-then-train pairs to what a person is shown: the calibration, the accuracy estimate
and the suspect labels, in one call that every front end shares (the runner's
:class:`~modal_vlm.evaluation.LoopMonitor`, the labeling app, a Label Studio backend).

A *pair* is one labeled image as the loop saw it before learning it: the probabilities the
model gave it, the label, that model's margin scale, the temperature that calibrated what the
front end showed for it, the round, how many labels that model had learned, and whether the
image was an audit pick (drawn at random).

* **Calibration**: temperature scaling on the pairs, each model's log-probabilities first
  divided by its margin scale (:func:`~modal_vlm.evaluation.calibration.margin_scale`), the
  most recent rounds weighing most (each round back counts ``decay`` times less) and the
  zero-shot model's pairs left out once trained models have scored enough: a model's
  calibration changes as it learns (the zero-shot model needs about twice the temperature of
  one trained on 40 labels), and the margin scale follows most of that change
  (``benchmarks/results/trust.md``).
* **Estimate**: the current model's mean calibrated confidence on the unlabeled pool, plus
  how far the shown confidences fell from the truth on the audit pairs, the rectifier of
  prediction-powered inference. The shown confidence is the one computed *then*, by the
  calibration of the time, so the rectifier measures the whole procedure, its lag behind a
  learning model included; audit picks make it unbiased whatever the strategy prefers. The
  interval adds the uncertainty of the current temperature (its standard error moves the
  pool's mean confidence) to the rectifier's.
* **Suspects**: the labels that the models able to judge them put well below the classes they
  predicted (:func:`~modal_vlm.evaluation.suspect_order`, the geometric mean of the
  opinions' ratios): the held-out opinion, calibrated as it was then, and other models'
  (the current one, the zero-shot one), each calibrated with the current temperature on its
  own margin scale. A weak early model, calibrated by its own soft temperature, flags little;
  the same probabilities sharpened by a later model's temperature would flag half its labels.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .calibration import TemperatureScaling, _log_proba, _softmax, rescale
from .estimate import AccuracyEstimate, prediction_powered_accuracy
from .suspects import DEFAULT_SUSPECT_RATIO, suspect_order, suspicion

#: Each round back, a pair weighs this many times less in the calibration: of 0.5, 0.7, 0.85 and 1,
#: 0.7 keeps the calibration error low at both 40 and 80 labels with the default learner, with a
#: coverage near the best (``benchmarks/results/trust.md``, the decay table).
DEFAULT_CALIBRATION_DECAY = 0.7
#: Fewer audit pairs with a shown calibrated confidence than this: no estimate yet.
MIN_ESTIMATE_PAIRS = 3
#: Audit pairs scored by fewer models (rounds) than this: no estimate yet. The rectifier of one
#: model's pairs measures that model's calibration error alone, and the current model differs:
#: such estimates covered the truth in 68 % of random's second rounds
#: (``benchmarks/results/trust.md``, the estimate table by round).
MIN_ESTIMATE_ROUNDS = 2


def _column(values, n, dtype, name):
    values = np.asarray(values, dtype=dtype)
    if values.shape != (n,):
        raise ValueError(f"{name} must hold one value per pair ({n}), got shape {values.shape}.")
    return values


@dataclass(frozen=True)
class HeldOutPairs:
    """The test-then-train pairs of a loop (a frozen dataclass; the fields are attributes).

    Parameters
    ----------
    proba : array-like of shape (n, n_classes)
        Each labeled image's probabilities under the model that had not learned it yet.
    labels : array-like of int, shape (n,)
        The labels given, as class positions (columns of ``proba``).
    audit : array-like of bool, shape (n,), optional
        Drawn at random from the unlabeled images (default: none).
    temperature : array-like of float, shape (n,), optional
        The temperature that calibrated the confidence shown for the image when it was
        scored; NaN where no calibration existed yet (default: all NaN).
    rounds : array-like of int, shape (n,), optional
        The round (batch) each image was labeled in (default: all 1).
    model_labels : array-like of int, shape (n,), optional
        Labels the scoring model had learned (0: zero-shot; default: all 1).
    scale : array-like of float, shape (n,), optional
        The scoring model's :func:`~modal_vlm.evaluation.calibration.margin_scale` (default:
        all 1, the probabilities as they are).

    Examples
    --------
    >>> pairs = HeldOutPairs([[0.9, 0.1], [0.3, 0.7]], [0, 0], audit=[True, False], temperature=[np.nan, 2.0])
    >>> len(pairs), pairs.correct.tolist(), pairs.shown.round(3).tolist()
    (2, [True, False], [nan, 0.604])
    """

    proba: np.ndarray
    labels: np.ndarray
    audit: np.ndarray = None
    temperature: np.ndarray = None
    rounds: np.ndarray = None
    model_labels: np.ndarray = None
    scale: np.ndarray = None
    correct: np.ndarray = field(init=False, repr=False)
    shown: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        labels = np.asarray(self.labels, dtype=np.intp).reshape(-1)
        n = len(labels)
        proba = np.asarray(self.proba, dtype=float)
        if n == 0:
            proba = np.zeros((0, proba.shape[1] if proba.ndim == 2 else 2))
        elif proba.ndim != 2 or len(proba) != n:
            raise ValueError(f"proba must be (n_pairs, n_classes) with one row per label, got shape {proba.shape}.")
        defaults = {"audit": (False, bool), "temperature": (np.nan, float), "rounds": (1, np.intp),
                    "model_labels": (1, np.intp), "scale": (1.0, float)}
        for name, (default, dtype) in defaults.items():
            value = getattr(self, name)
            object.__setattr__(self, name, np.full(n, default, dtype=dtype) if value is None
                               else _column(value, n, dtype, name))
        object.__setattr__(self, "proba", proba)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "correct", proba.argmax(axis=1) == labels if n else np.zeros(0, dtype=bool))
        object.__setattr__(self, "shown", self.calibrated().max(axis=1) if n else np.zeros(0))

    def calibrated(self, fallback=np.nan) -> np.ndarray:
        """Each pair's probabilities calibrated by its own temperature (``fallback`` where none).

        Parameters
        ----------
        fallback : float, default=nan
            Temperature of the pairs scored before any calibration (NaN leaves their rows NaN).

        Returns
        -------
        ndarray of shape (n, n_classes)
            ``softmax(log(proba) / (scale * temperature))`` row by row; ``shown`` is its maximum.
        """
        temperature = np.where(np.isnan(self.temperature), fallback, self.temperature)
        return _softmax(_log_proba(self.proba) / (self.scale * temperature)[:, None])

    def rescaled(self) -> np.ndarray:
        """Each pair's probabilities divided by its model's margin scale in the log domain (what
        the temperature is fitted on).

        Returns
        -------
        ndarray of shape (n, n_classes)
            ``rescale(proba, scale)``.
        """
        return rescale(self.proba, self.scale) if len(self) else self.proba

    def __len__(self) -> int:
        return len(self.labels)


def fit_calibrator(pairs, decay=DEFAULT_CALIBRATION_DECAY) -> TemperatureScaling:
    """Temperature scaling for the current model, from the pairs (see the module docstring).

    Parameters
    ----------
    pairs : HeldOutPairs
        The loop's pairs.
    decay : float, default=DEFAULT_CALIBRATION_DECAY
        Weight factor per round of age, in (0, 1]: 1 weighs every round alike.

    Returns
    -------
    TemperatureScaling
        Fitted; ``fitted_`` False (probabilities unchanged) before enough pairs.

    Examples
    --------
    >>> import numpy as np
    >>> proba = np.tile([[0.97, 0.03]], (20, 1)); labels = np.array([0, 1] * 10)
    >>> fit_calibrator(HeldOutPairs(proba, labels)).transform(proba[:1]).round(2).tolist()  # right half the time
    [[0.52, 0.48]]
    """
    if not 0 < decay <= 1:
        raise ValueError(f"decay must be in (0, 1], got {decay!r}.")
    scaler = TemperatureScaling()
    if not len(pairs):
        return scaler.fit(np.zeros((0, 2)), np.zeros(0, dtype=int))
    trained = pairs.model_labels > 0
    use = trained if trained.sum() >= scaler.min_samples else np.ones(len(pairs), dtype=bool)
    weight = decay ** (pairs.rounds.max() - pairs.rounds[use]).astype(float)
    return scaler.fit(pairs.rescaled()[use], pairs.labels[use], sample_weight=weight)


def shown_probabilities(calibrator, proba, scale) -> np.ndarray:
    """A model's probabilities as a person is shown them: margin-scaled and calibrated once the
    calibration is fitted, as they are before (nothing learned yet to correct them with).

    Parameters
    ----------
    calibrator : TemperatureScaling
        From :func:`fit_calibrator`.
    proba : array-like of shape (n, n_classes)
        The model's raw ``predict_proba``.
    scale : float
        The model's :func:`~modal_vlm.evaluation.calibration.margin_scale`.

    Returns
    -------
    ndarray of float64 of shape (n, n_classes)
        Same argmax as ``proba``.

    Examples
    --------
    >>> unfitted = fit_calibrator(HeldOutPairs(np.zeros((0, 2)), []))
    >>> shown_probabilities(unfitted, [[0.9, 0.1]], scale=3.0).tolist()
    [[0.9, 0.1]]
    """
    if not calibrator.fitted_:
        return np.asarray(proba, dtype=np.float64)
    return calibrator.transform(rescale(proba, scale))


@dataclass(frozen=True)
class Assessment:
    """What :func:`assess` found (a frozen dataclass; the fields are attributes).

    Parameters
    ----------
    calibrator : TemperatureScaling
        Fitted on margin-scaled probabilities: :meth:`calibrate` gives the confidence to show.
    estimate : AccuracyEstimate or None
        The current model's accuracy on the pool, with its interval; None before
        :data:`MIN_ESTIMATE_PAIRS` audit pairs with a shown calibrated confidence, scored
        in at least :data:`MIN_ESTIMATE_ROUNDS` rounds.
    suspects : ndarray of int
        Positions of the suspect pairs, most suspect first.
    suspicion : ndarray of float
        Every pair's :func:`~modal_vlm.evaluation.suspicion` (0: the model agreed).
    scale : float, default=1.0
        The current model's :func:`~modal_vlm.evaluation.calibration.margin_scale`.
    """

    calibrator: TemperatureScaling
    estimate: AccuracyEstimate | None
    suspects: np.ndarray
    suspicion: np.ndarray
    scale: float = 1.0

    def calibrate(self, proba) -> np.ndarray:
        """The current model's probabilities as a person is shown them.

        Parameters
        ----------
        proba : array-like of shape (n, n_classes)
            The current model's raw ``predict_proba``.

        Returns
        -------
        ndarray of shape (n, n_classes)
            :func:`shown_probabilities`: same argmax as ``proba``.
        """
        return shown_probabilities(self.calibrator, proba, self.scale)


def _temperature_variance(calibrator, pool_proba) -> float:
    """Variance of the pool's mean calibrated confidence from the temperature's uncertainty:
    half the change between one standard error of ``log T`` up and down, squared."""
    se = min(calibrator.log_temperature_se_, 3.0)   # beyond e^3 the range's bounds rule
    log_p = _log_proba(pool_proba)
    high, low = (_softmax(log_p / (calibrator.temperature_ * np.exp(sign * se))).max(axis=1).mean() for sign in (1, -1))
    return float((low - high) / 2) ** 2


def _calibrated_opinions(calibrator, opinions, shape):
    """Other models' probabilities of the labeled images as shown now (rows of NaN kept)."""
    shown = []
    for k, (proba, scale) in enumerate(opinions):
        proba = np.asarray(proba, dtype=float)
        if proba.shape != shape:
            raise ValueError(f"opinions[{k}] must hold one row per pair, of shape {shape}, got {proba.shape}.")
        known = np.isfinite(proba).all(axis=1)
        calibrated = np.full(shape, np.nan)
        if known.any():
            calibrated[known] = shown_probabilities(calibrator, proba[known], scale)
        shown.append(calibrated)
    return shown


def assess(pairs, pool_proba, *, scale=1.0, opinions=(), level=0.9, suspect_ratio=DEFAULT_SUSPECT_RATIO,
           decay=DEFAULT_CALIBRATION_DECAY) -> Assessment:
    """Calibrate, estimate the accuracy on the pool and flag suspect labels, from the pairs.

    Parameters
    ----------
    pairs : HeldOutPairs
        The loop's pairs.
    pool_proba : array-like of shape (n_pool, n_classes)
        The current model's probabilities (raw ``predict_proba``) on the images whose
        accuracy is estimated (the unlabeled pool).
    scale : float, default=1.0
        The current model's :func:`~modal_vlm.evaluation.calibration.margin_scale`, measured
        where the pairs' scales were (a loop's stop set); 1: the probabilities as they are,
        like the pairs' default.
    opinions : sequence of (array-like of shape (n_pairs, n_classes), float), optional
        Other models' raw probabilities of the pairs' images (row ``k``: pair ``k``; a row of
        NaN where a model did not score the image), each with that model's margin scale: the
        current model's and the zero-shot model's, the suspect rule's further opinions.
        Empty: the held-out opinion alone.
    level : float, default=0.9
        Confidence level of the estimate's interval.
    suspect_ratio : float, default=DEFAULT_SUSPECT_RATIO
        See :func:`~modal_vlm.evaluation.suspect_order`.
    decay : float, default=DEFAULT_CALIBRATION_DECAY
        See :func:`fit_calibrator`.

    Returns
    -------
    Assessment
        The calibrator, the estimate (or None) and the suspects.

    Examples
    --------
    >>> import numpy as np
    >>> proba = np.full((40, 3), 0.05); proba[np.arange(40), np.arange(40) % 3] = 0.9
    >>> labels = np.arange(40) % 3; labels[:4] = (labels[:4] + 1) % 3   # four slips
    >>> temperature = np.where(np.arange(40) < 20, np.nan, 1.0)         # calibrated from the 21st on
    >>> rounds = 1 + np.arange(40) // 10                                  # four batches of ten
    >>> pairs = HeldOutPairs(proba, labels, audit=np.arange(40) % 2 == 0, temperature=temperature, rounds=rounds)
    >>> found = assess(pairs, proba)
    >>> found.estimate.n, sorted(found.suspects.tolist())
    (10, [0, 1, 2, 3])
    """
    calibrator = fit_calibrator(pairs, decay)
    pool_proba = np.asarray(pool_proba, dtype=float)
    scale = float(scale)
    estimate, ranked, score = None, np.zeros(0, dtype=np.intp), np.zeros(0)
    if len(pairs):
        first = pairs.temperature[~np.isnan(pairs.temperature)]   # the pairs scored before any calibration:
        calibrated = pairs.calibrated(first[0] if len(first) else calibrator.temperature_)   # the first one made
        checked = pairs.audit & ~np.isnan(pairs.shown)
        enough = checked.sum() >= MIN_ESTIMATE_PAIRS and len(np.unique(pairs.rounds[checked])) >= MIN_ESTIMATE_ROUNDS
        if enough and len(pool_proba):
            pool = rescale(pool_proba, scale)
            estimate = prediction_powered_accuracy(shown_probabilities(calibrator, pool_proba, scale).max(axis=1),
                                                   pairs.shown[checked],
                                                   pairs.correct[checked], level=level,
                                                   extra_variance=_temperature_variance(calibrator, pool))
        others = _calibrated_opinions(calibrator, opinions, pairs.proba.shape)
        score = suspicion(calibrated, pairs.labels, others)
        ranked = suspect_order(calibrated, pairs.labels, suspect_ratio, others)
    return Assessment(calibrator, estimate, ranked, score, scale)


__all__ = ["Assessment", "DEFAULT_CALIBRATION_DECAY", "HeldOutPairs", "MIN_ESTIMATE_PAIRS", "MIN_ESTIMATE_ROUNDS",
           "assess", "fit_calibrator", "shown_probabilities"]
