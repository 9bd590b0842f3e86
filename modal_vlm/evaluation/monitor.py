"""One object that watches an active-learning loop and says what the labels bought.

:class:`LoopMonitor` sits beside a modAL loop (a hand-written one, :func:`run_active_learning
<modal_vlm.experiment.run_active_learning>`, or the labeling app) and, test-then-train, scores
every new label with the model *before* it is taught. From those pairs it calibrates the
confidence (:mod:`~modal_vlm.evaluation.calibration`), estimates the current model's accuracy
with an interval (:mod:`~modal_vlm.evaluation.estimate`), flags suspect labels
(:mod:`~modal_vlm.evaluation.suspects`), and compares each new model's predictions on a fixed
stop set with the previous one's (:mod:`~modal_vlm.evaluation.stopping`). A share of every
batch, the *audit* picks, is drawn at random from the pool: unbiased pairs, whatever the
strategy prefers; their labels train the next model like any other.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
from sklearn.base import BaseEstimator

from .assessment import DEFAULT_CALIBRATION_DECAY, HeldOutPairs, assess, fit_calibrator, shown_probabilities
from .calibration import expected_calibration_error, margin_scale
from .stopping import DEFAULT_KAPPA_THRESHOLD, DEFAULT_KAPPA_WINDOW, is_stable, prediction_agreement
from .suspects import DEFAULT_SUSPECT_RATIO
from ..sentinels import NONE

#: Share of every batch drawn at random for the accuracy estimate (see trust.md).
DEFAULT_AUDIT_FRACTION = 0.2
#: Unlabeled images whose predictions are compared between successive models.
DEFAULT_STOP_SET_SIZE = 2000
#: Seed streams of :class:`LoopMonitor`'s draws, apart from the strategies' (``round_seed``).
_STOP_SET_STREAM, _AUDIT_STREAM = 0x5701, 0xA0D1
#: Significant digits kept of the probabilities recorded before teaching: what a checkpoint
#: stores, and so all a resumed run has; an uninterrupted run uses the same rounded values.
_DIGITS = 7


def _take(X, idx):
    return X[idx] if isinstance(X, np.ndarray) else [X[i] for i in idx]


def _gather(items):
    """Images kept one by one, back as one batch (rows of an array stacked again)."""
    return np.stack(items) if isinstance(items[0], np.ndarray) else list(items)


def _rounded(proba) -> np.ndarray:
    return np.array([[float(f"{v:.{_DIGITS}g}") for v in row] for row in np.asarray(proba, dtype=float)])


def check_fraction(name, value, allow_zero=True) -> float:
    """``value`` as a float, or ``ValueError`` unless it is a number in [0, 1) ((0, 1) without zero).

    Examples
    --------
    >>> check_fraction("audit_fraction", 1.0)
    Traceback (most recent call last):
    ...
    ValueError: audit_fraction must be a fraction in [0, 1), got 1.0.
    """
    valid = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) \
        and (0 <= value < 1 if allow_zero else 0 < value < 1)
    if not valid:
        raise ValueError(f"{name} must be a fraction in {'[0, 1)' if allow_zero else '(0, 1)'}, got {value!r}.")
    return float(value)


def audit_count(audit_fraction, round_, n_instances) -> int:
    """How many of round ``round_``'s ``n_instances`` picks are audit picks.

    Rounds alternate between ``floor`` and ``ceil`` of ``audit_fraction * n_instances`` so
    that after ``r`` rounds ``floor(r * audit_fraction * n_instances)`` picks were audits:
    the share is ``audit_fraction`` whatever the batch size.

    Parameters
    ----------
    audit_fraction : float
        Share of the picks, in [0, 1).
    round_ : int
        Round number, from 1.
    n_instances : int
        Picks in the round.

    Returns
    -------
    int
        Audit picks of the round, less than ``n_instances``.

    Raises
    ------
    ValueError
        The audit share would leave a round with no pick for the strategy.

    Examples
    --------
    >>> [audit_count(0.25, r, 10) for r in (1, 2, 3, 4)]
    [2, 3, 2, 3]
    >>> audit_count(0.5, 1, 1)  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    ValueError: an audit share of 0.5 of 1 picks per round leaves rounds with no pick for the query strategy;
    lower audit_fraction or raise the budget.
    """
    share = check_fraction("audit_fraction", audit_fraction) * n_instances
    if share and math.ceil(share) >= n_instances:
        raise ValueError(f"an audit share of {audit_fraction} of {n_instances} picks per round leaves rounds "
                         "with no pick for the query strategy; lower audit_fraction or raise the budget.")
    return math.floor(round_ * share + 1e-9) - math.floor((round_ - 1) * share + 1e-9)



def _known(y) -> np.ndarray:
    """Which labels name a class: an answer "none of these classes" (:data:`modal_vlm.NONE`)
    has no class to be right or wrong about, so it is neither a held-out pair nor calibrated."""
    return np.asarray(y) != NONE

class LoopMonitor(BaseEstimator):
    """Calibration, accuracy estimate, stopping signal and suspect labels for an active-learning loop.

    Parameters
    ----------
    audit_fraction : float, default=DEFAULT_AUDIT_FRACTION
        Share of each batch drawn at random from the unlabeled pool (:meth:`audit_positions`).
    level : float, default=0.9
        Confidence level of the accuracy interval.
    stop_set_size : int, default=DEFAULT_STOP_SET_SIZE
        Pool images (at most) whose predictions are compared between successive models.
    kappa_threshold : float, default=DEFAULT_KAPPA_THRESHOLD
        Mean kappa of the last ``kappa_window`` rounds that counts as stable.
    kappa_window : int, default=DEFAULT_KAPPA_WINDOW
        Rounds averaged for the stopping signal.
    suspect_ratio : float, default=DEFAULT_SUSPECT_RATIO
        A label is suspect when its class gets less than this share of the probability of
        the class predicted for it, in the geometric mean of the model before it learned the
        label, the current one and, where the estimator has ``zero_shot_proba``, the zero-shot
        one (see :func:`~modal_vlm.evaluation.suspect_order`).
    calibration_decay : float, default=DEFAULT_CALIBRATION_DECAY
        Weight factor per round of age of a pair in the calibration (see
        :func:`~modal_vlm.evaluation.fit_calibrator`).
    random_state : int or None
        Seeds the stop set and the audit picks.

    Attributes
    ----------
    stop_set_ : ndarray of int
        Positions in the pool of the stop set.
    scale_ : float
        The current model's :func:`~modal_vlm.evaluation.calibration.margin_scale` on the
        stop set (set by :meth:`start` and :meth:`update`).
    calibrator_ : TemperatureScaling
        Fitted on the pairs so far (:func:`~modal_vlm.evaluation.fit_calibrator`; refitted
        by :meth:`update`).
    pairs_ : HeldOutPairs
        Every label observed so far.
    kappas_ : list of float or None
        Kappa between each model and the one before (None for the first).

    Examples
    --------
    A hand-written modAL loop (``oracle`` gives labels; ``X_pool`` is a list or array):

    >>> monitor = LoopMonitor(random_state=0).start(learner.estimator, X_pool)  # doctest: +SKIP
    >>> for round_ in range(1, 9):                                           # doctest: +SKIP
    ...     unlabeled = np.setdiff1d(np.arange(len(X_pool)), labeled)
    ...     audit = unlabeled[monitor.audit_positions(round_, len(unlabeled), 10)]
    ...     rest = np.setdiff1d(unlabeled, audit)
    ...     picked = rest[learner.query(X_pool[rest], n_instances=10 - len(audit))[0]]
    ...     new = np.concatenate([picked, audit])
    ...     monitor.observe(learner.estimator, X_pool[new], oracle(new), ids=new,
    ...                     audit=np.isin(new, audit))
    ...     learner.teach(X_pool[new], oracle(new))
    ...     labeled = np.concatenate([labeled, new])
    ...     report = monitor.update(learner.estimator, X_pool[np.setdiff1d(unlabeled, new)])
    ...     print(report["estimate"], report["stable"], report["suspect_labels"])
    """

    def __init__(self, audit_fraction=DEFAULT_AUDIT_FRACTION, *, level=0.9, stop_set_size=DEFAULT_STOP_SET_SIZE,
                 kappa_threshold=DEFAULT_KAPPA_THRESHOLD, kappa_window=DEFAULT_KAPPA_WINDOW,
                 suspect_ratio=DEFAULT_SUSPECT_RATIO, calibration_decay=DEFAULT_CALIBRATION_DECAY,
                 random_state=None):
        self.audit_fraction = audit_fraction
        self.level = level
        self.stop_set_size = stop_set_size
        self.kappa_threshold = kappa_threshold
        self.kappa_window = kappa_window
        self.suspect_ratio = suspect_ratio
        self.calibration_decay = calibration_decay
        self.random_state = random_state

    # -- set-up ---------------------------------------------------------------------------

    def _validate(self):
        check_fraction("audit_fraction", self.audit_fraction)
        check_fraction("level", self.level, allow_zero=False)
        for name in ("stop_set_size", "kappa_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        if not isinstance(self.kappa_threshold, numbers.Real) or not -1 <= self.kappa_threshold <= 1:
            raise ValueError(f"kappa_threshold must be a number in [-1, 1], got {self.kappa_threshold!r}.")
        for name in ("suspect_ratio", "calibration_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value!r}.")

    def _seed(self, *stream):
        return None if self.random_state is None else np.random.SeedSequence([int(self.random_state), *stream])

    def start(self, estimator, X_pool, history=()) -> LoopMonitor:
        """Fix the stop set and take the current model's predictions on it; replay ``history``.

        Parameters
        ----------
        estimator : classifier
            The current model (``predict_proba`` and ``classes_``), e.g. zero-shot.
        X_pool : sequence of images
            The whole pool (labeled or not); the stop set is drawn from it.
        history : list of dict, optional
            Round records of :func:`~modal_vlm.experiment.run_active_learning` with this
            monitor's fields (``queried``, ``queried_labels``, ``queried_proba``, ``audit``,
            ``kappa``, ``scale``): a resumed run picks up where they end, ``estimator`` being
            the model of the last of them. ``queried`` holds positions in ``X_pool``. Records
            without ``scale`` (written before it existed) count as scale 1.

        Returns
        -------
        LoopMonitor
            ``self``.
        """
        self._validate()
        n_pool = len(X_pool)
        rng = np.random.default_rng(self._seed(_STOP_SET_STREAM))
        self.stop_set_ = np.sort(rng.choice(n_pool, min(self.stop_set_size, n_pool), replace=False))
        self._X_stop = _take(X_pool, self.stop_set_)
        self._stop_predictions, self.scale_ = self._look(estimator)
        self._columns = {key: [] for key in ("proba", "labels", "audit", "temperature", "rounds", "model_labels",
                                             "ids", "scale")}
        self.kappas_ = []
        self._X_labeled = []   # the pairs' images: other models' opinions of them flag suspects
        self._zero_shot_scale = None
        self.calibrator_ = fit_calibrator(self.pairs_, self.calibration_decay)
        scored_by = 1.0   # the margin scale of the model that scored the next record's pairs
        for record in history:   # the same steps as observe and update took
            self.kappas_.append(record.get("kappa"))
            if "queried_proba" in record:   # else written before the monitor existed: no pairs
                ids = np.asarray(record["queried"], dtype=np.intp)
                audit = set(record.get("audit", []))
                known = _known(record["queried_labels"])
                self._add(self._positions(estimator, np.asarray(record["queried_labels"])[known]),
                          np.asarray(record["queried_proba"], dtype=float)[known], ids[known],
                          [i in audit for i in ids[known]], scored_by)
                self._X_labeled += list(_take(X_pool, ids[known]))
                self.calibrator_ = fit_calibrator(self.pairs_, self.calibration_decay)
            scored_by = record.get("scale", 1.0)
        return self

    @property
    def pairs_(self) -> HeldOutPairs:
        """Every label observed so far, as :class:`~modal_vlm.evaluation.HeldOutPairs`."""
        c = self._columns
        n_classes = len(c["proba"][0]) if c["proba"] else 2
        return HeldOutPairs(np.asarray(c["proba"], dtype=float).reshape(len(c["labels"]), n_classes), c["labels"],
                            audit=c["audit"], temperature=c["temperature"], rounds=c["rounds"],
                            model_labels=c["model_labels"], scale=c["scale"])

    def _look(self, estimator):
        """The model's predictions on the stop set, and its margin scale there."""
        if not len(self._X_stop):
            return np.zeros(0, dtype=np.intp), 1.0
        proba = np.asarray(estimator.predict_proba(self._X_stop))
        return proba.argmax(axis=1), margin_scale(proba)

    @staticmethod
    def _positions(estimator, y) -> np.ndarray:
        classes = list(np.asarray(estimator.classes_).tolist())
        try:
            return np.array([classes.index(v) for v in np.asarray(y).tolist()], dtype=np.intp)
        except ValueError:
            raise ValueError(f"labels {sorted(set(np.asarray(y).tolist()) - set(classes))[:10]} are not among the "
                             f"classifier's classes_ {classes[:10]}.") from None

    def _add(self, labels, proba, ids, audit, scale):
        """Record the pairs of one round, with their model's margin scale and the temperature of the
        confidence shown for them."""
        c = self._columns
        temperature = self.calibrator_.temperature_ if self.calibrator_.fitted_ else np.nan
        round_, learned = (c["rounds"][-1] + 1 if c["rounds"] else 1), len(c["labels"])
        for key, values in (("labels", labels), ("proba", proba), ("ids", ids), ("audit", audit)):
            c[key].extend(np.asarray(values).tolist())
        c["temperature"].extend([temperature] * len(labels))
        c["scale"].extend([float(scale)] * len(labels))
        c["rounds"].extend([round_] * len(labels))
        c["model_labels"].extend([learned] * len(labels))

    # -- the loop -------------------------------------------------------------------------

    def audit_positions(self, round_, n_candidates, n_instances) -> np.ndarray:
        """The audit picks of a round: :func:`audit_count` positions among ``n_candidates``, at random.

        Parameters
        ----------
        round_ : int
            Round number, from 1 (seeds the draw with ``random_state``).
        n_candidates : int
            Unlabeled images to draw from.
        n_instances : int
            Picks in the round (audit and strategy together).

        Returns
        -------
        ndarray of int
            Sorted distinct positions in ``range(n_candidates)``.
        """
        k = audit_count(self.audit_fraction, round_, n_instances)
        rng = np.random.default_rng(self._seed(_AUDIT_STREAM, int(round_)))
        return np.sort(rng.choice(n_candidates, min(k, n_candidates), replace=False)).astype(np.intp)

    def observe(self, estimator, X, y, ids=None, audit=None) -> dict:
        """Score new labels with the model that has not learned them yet (test-then-train).

        Call it before ``teach``: the probabilities are held out only then.

        Parameters
        ----------
        estimator : classifier
            The model that chose these images, before it learns their labels.
        X : sequence of images
            The newly labeled images.
        y : array-like of shape (n,)
            Their labels (entries of ``estimator.classes_``, or :data:`modal_vlm.NONE`: left out).
        ids : array-like of int, optional
            Their ids (pool positions), reported by :meth:`update`'s ``suspect_labels``;
            default: their order of observation.
        audit : array-like of bool, optional
            Which were audit picks (drawn at random); default none.

        Returns
        -------
        dict
            ``queried_proba`` (the probabilities, rounded as a checkpoint stores them) and
            ``audit`` (the ids of the audit picks): what :meth:`start` needs to replay.
        """
        n, seen = len(X), len(self._columns["ids"])
        ids = np.arange(seen, seen + n) if ids is None else np.asarray(ids, dtype=np.intp)
        audit = np.zeros(n, dtype=bool) if audit is None else np.asarray(audit, dtype=bool)
        if ids.shape != (n,) or audit.shape != (n,) or len(np.asarray(y)) != n:
            raise ValueError(f"X, y, ids and audit must describe the same {n} images.")
        proba = _rounded(estimator.predict_proba(X)) if n else np.zeros((0, len(estimator.classes_)))
        known = _known(y)
        self._add(self._positions(estimator, np.asarray(y)[known]), proba[known], ids[known], audit[known],
                  self.scale_)
        self._X_labeled += list(_take(X, np.flatnonzero(known)))
        return {"queried_proba": proba.tolist(), "audit": ids[audit].tolist()}

    def update(self, estimator, X_unlabeled) -> dict:
        """After teaching: recalibrate, estimate, compare with the previous model, flag suspects.

        Parameters
        ----------
        estimator : classifier
            The model just taught.
        X_unlabeled : sequence of images
            The images still unlabeled: the accuracy is estimated on them.

        Returns
        -------
        dict
            ``estimate`` (:meth:`AccuracyEstimate.as_dict`, or None before enough audit pairs: see
            :func:`~modal_vlm.evaluation.assess`),
            ``kappa`` and ``changed`` (agreement with the previous model on the stop set;
            None for the first model), ``stable`` (the stopping signal),
            ``suspect_labels`` (ids, most suspect first) and ``scale`` (the model's margin
            scale, which :meth:`start` reads back on resume).
        """
        current, self.scale_ = self._look(estimator)
        agreement = prediction_agreement(self._stop_predictions, current) if self.kappas_ or self._columns["ids"] \
            else {"kappa": None, "changed": None}
        self._stop_predictions = current
        self.kappas_.append(agreement["kappa"])
        estimate, suspects = None, []
        if self._columns["ids"]:
            pool = np.asarray(estimator.predict_proba(X_unlabeled)) if len(X_unlabeled) else np.zeros((0, 2))
            found = assess(self.pairs_, pool, scale=self.scale_, opinions=self._opinions(estimator),
                           level=self.level, suspect_ratio=self.suspect_ratio, decay=self.calibration_decay)
            self.calibrator_, estimate = found.calibrator, found.estimate
            suspects = np.asarray(self._columns["ids"])[found.suspects].tolist()
        return {"estimate": None if estimate is None else estimate.as_dict(),
                "kappa": agreement["kappa"], "changed": agreement["changed"],
                "stable": is_stable(self.kappas_, self.kappa_threshold, self.kappa_window),
                "suspect_labels": suspects, "scale": self.scale_}

    def _opinions(self, estimator) -> list:
        """The current model's and, where the estimator has one (``zero_shot_proba``), the
        zero-shot model's probabilities of the labeled images, with their margin scales."""
        X = _gather(self._X_labeled)
        opinions = [(estimator.predict_proba(X), self.scale_)]
        zero_shot = getattr(estimator, "zero_shot_proba", None)
        if zero_shot is not None:
            if self._zero_shot_scale is None:   # the zero-shot model never changes: measured once
                self._zero_shot_scale = margin_scale(zero_shot(self._X_stop)) if len(self._X_stop) else 1.0
            opinions.append((zero_shot(X), self._zero_shot_scale))
        return opinions

    def test_calibration(self, estimator, X_test, y_test) -> dict:
        """How well the shown confidence is calibrated on a labeled test set.

        Parameters
        ----------
        estimator : classifier
            The current model.
        X_test : sequence of images
            Test images.
        y_test : array-like
            Their labels (entries of ``estimator.classes_``, or :data:`modal_vlm.NONE`: left out).

        Returns
        -------
        dict
            ``temperature`` (the calibration's), ``ece`` (expected calibration error of the
            calibrated confidence) and ``ece_uncalibrated`` (of ``predict_proba``'s).
        """
        known = _known(y_test)
        proba = np.asarray(estimator.predict_proba(X_test))[known]
        y = self._positions(estimator, np.asarray(y_test)[known])
        return {"temperature": round(self.calibrator_.temperature_, 6),
                "ece": round(expected_calibration_error(y, self.calibrate(proba)), 6),
                "ece_uncalibrated": round(expected_calibration_error(y, proba), 6)}

    def calibrate(self, proba) -> np.ndarray:
        """Calibrated probabilities of the current model (:func:`~modal_vlm.evaluation.shown_probabilities`).

        Parameters
        ----------
        proba : array-like of shape (n, n_classes)
            ``predict_proba`` of the current model.

        Returns
        -------
        ndarray of shape (n, n_classes)
            Rows summing to 1, with the same argmax as ``proba``.
        """
        return shown_probabilities(self.calibrator_, proba, self.scale_)


__all__ = ["DEFAULT_AUDIT_FRACTION", "DEFAULT_STOP_SET_SIZE", "LoopMonitor", "audit_count", "check_fraction"]
