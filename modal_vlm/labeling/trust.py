"""What the labels bought, in the labeling app: calibrated confidence on the cards, the accuracy
estimate and the stopping signal in the header, and the review page's "likely wrong" list.

The numbers are :mod:`modal_vlm.evaluation`'s, as in the runner. Their inputs live in the
project:

* every card's probabilities before its label (test-then-train), and whether it was an audit
  pick, in the store's ``batch_scores`` (written with the batch);
* the current model's predictions on a fixed *stop set* of images and the agreement of each
  new model with the one before, in ``trust.json`` (rewritten atomically after each
  training), so a restart says the same thing.

Audit picks are drawn at random from the unlabeled images and shown in a shuffled order with
the strategy's picks, like any other card: nothing on the page or in ``/api/state`` tells
them apart (a person who knew would label them differently).
"""
from __future__ import annotations

import hashlib
import json
import threading

import numpy as np

from ..evaluation import (HeldOutPairs, LoopMonitor, assess, fit_calibrator, is_stable, prediction_agreement,
                          shown_probabilities)
from ..evaluation.calibration import margin_scale
from ..evaluation.monitor import DEFAULT_STOP_SET_SIZE

#: File of the project holding the stop set's predictions and the agreement history.
TRUST_FILE = "trust.json"


def stop_set(image_ids, seed, size=DEFAULT_STOP_SET_SIZE) -> list[int]:
    """The stop set: the ``size`` images whose seeded hash of the id is smallest.

    An image keeps its place when others are added or removed, so successive models are
    compared on (almost) the same images.

    Parameters
    ----------
    image_ids : iterable of int
        Readable images.
    seed : int
        The project's seed.
    size : int, default=DEFAULT_STOP_SET_SIZE
        At most this many images.

    Returns
    -------
    list of int
        Image ids, sorted.

    Examples
    --------
    >>> len(stop_set(range(10), seed=0, size=3)), stop_set(range(10), 0, 3) == stop_set(range(10), 0, 3)
    (3, True)
    """
    def rank(image_id):
        return hashlib.blake2b(f"{seed}:{image_id}".encode(), digest_size=8).digest()

    return sorted(sorted(image_ids, key=rank)[:size])


def choose_audit(n_pool, n_instances, batch_number, settings) -> np.ndarray:
    """Positions among ``n_pool`` unlabeled images of the batch's audit picks (drawn at random).

    A batch too small to leave the strategy a pick after the audit share (the last ones of a
    folder) has no audit pick.

    Parameters
    ----------
    n_pool : int
        Unlabeled images.
    n_instances : int
        Images in the batch.
    batch_number : int
        The batch's number, from 1 (seeds the draw with the project's seed).
    settings : Settings
        ``audit_fraction`` and ``seed``.

    Returns
    -------
    ndarray of int
        Sorted positions; none for a batch without audit picks.
    """
    monitor = LoopMonitor(settings.audit_fraction, random_state=settings.seed)
    try:
        return monitor.audit_positions(batch_number, n_pool, n_instances)
    except ValueError:   # the audit share would take the whole (last, small) batch
        return np.zeros(0, dtype=np.intp)


class ProjectTrust:
    """The app's calibration, estimate, stopping signal and suspects (see the module docstring).

    Parameters
    ----------
    project : Project
        The project (settings, directory).
    store : LabelStore
        Its label store.
    """

    def __init__(self, project, store):
        self.project, self.store = project, store
        self._lock = threading.Lock()
        self._cache = (None, None)

    # -- the test-then-train pairs ----------------------------------------------------------

    def pairs(self) -> tuple:
        """Labeled cards with the probabilities their model gave them before the label.

        Only images whose current decision is a class of the project count (an image later
        marked "none of these" or skipped is no evidence of right or wrong), with the label
        as it is now (a fixed slip counts as fixed).

        Returns
        -------
        pairs : HeldOutPairs
            Rounds are batch ids; each card's temperature where its confidence was calibrated.
        image_ids : ndarray of int
            The image of each pair.
        """
        classes = list(self.project.settings.classes)
        latest = {row["image_id"]: row for row in self.store.batch_scores()}   # an image queried again: its last card
        rows = [row for row in latest.values()
                if row["kind"] == "class" and row["label"] in classes and len(row["proba"]) == len(classes)]
        pairs = HeldOutPairs(np.array([row["proba"] for row in rows], dtype=float).reshape(len(rows), len(classes)),
                             [classes.index(row["label"]) for row in rows],
                             audit=[row["audit"] for row in rows],
                             temperature=[np.nan if row["temperature"] is None else row["temperature"] for row in rows],
                             rounds=[row["batch_id"] for row in rows],
                             model_labels=[row["model_labels"] for row in rows],
                             scale=[1.0 if row["scale"] is None else row["scale"] for row in rows])
        return pairs, np.array([row["image_id"] for row in rows], dtype=np.intp)

    def calibrate(self, proba, scale):
        """The current model's probabilities as a person is shown them
        (:func:`~modal_vlm.evaluation.shown_probabilities`), calibrated on the pairs so far
        (:func:`~modal_vlm.evaluation.fit_calibrator`, as :meth:`assessment`).

        Parameters
        ----------
        proba : array-like of shape (n, n_classes)
            The current model's raw probabilities.
        scale : float
            The current model's margin scale (:meth:`scale`).

        Returns
        -------
        probabilities : ndarray of shape (n, n_classes)
            Same argmax as ``proba``.
        temperature : float or None
            The calibration's temperature; None before enough labels (``proba`` unchanged).
        """
        calibrator = fit_calibrator(self.pairs()[0])
        return shown_probabilities(calibrator, proba, scale), calibrator.temperature_ if calibrator.fitted_ else None

    def scale(self, image_ids, proba) -> float:
        """A model's margin scale on the stop set (:func:`~modal_vlm.evaluation.calibration.margin_scale`).

        Parameters
        ----------
        image_ids : array of int
            Images the probabilities cover (the stop set is drawn from them).
        proba : array of shape (len(image_ids), n_classes)
            The model's raw probabilities of those images.

        Returns
        -------
        float
            The scale.
        """
        position = {int(i): k for k, i in enumerate(image_ids)}
        rows = [position[i] for i in stop_set(position, self.project.settings.seed)]
        return margin_scale(np.asarray(proba)[rows])

    def assessment(self, model_key, pool_ids, pool_proba, scale, zero_shot=None):
        """:func:`~modal_vlm.evaluation.assess` of the current pairs and pool, cached until the
        next label event or model.

        Parameters
        ----------
        model_key : object
            Identifies the current model (its training watermark).
        pool_ids : array of int
            The images the current model's probabilities cover (the labeled ones among them
            give the suspect rule the current model's opinion).
        pool_proba : array of shape (len(pool_ids), n_classes)
            Those probabilities (raw ``predict_proba``).
        scale : float
            The current model's margin scale (:meth:`scale`).
        zero_shot : tuple, optional
            ``(probabilities, margin scale)`` of the zero-shot model on the same images: the
            suspect rule's third opinion.

        Returns
        -------
        tuple
            ``(Assessment, pairs, image_ids)``: the pairs it rests on and their images
            (:meth:`pairs`).
        """
        key = (model_key, self.store.last_event_id(), len(pool_ids))
        with self._lock:
            if self._cache[0] == key:
                return self._cache[1]
        pairs, image_ids = self.pairs()
        unlabeled = set(self._unlabeled_ids())
        in_pool = np.array([i in unlabeled for i in pool_ids], dtype=bool)
        position = {int(i): k for k, i in enumerate(pool_ids)}

        def of_pairs(proba):   # rows in pair order; NaN for an image the probabilities miss
            proba = np.asarray(proba, dtype=float)
            rows = np.full(pairs.proba.shape, np.nan)
            scored = [k for k, i in enumerate(image_ids) if int(i) in position]
            rows[scored] = proba[[position[int(image_ids[k])] for k in scored]].reshape(len(scored), rows.shape[1])
            return rows

        opinions = [(of_pairs(pool_proba), scale)] + ([] if zero_shot is None else [(of_pairs(zero_shot[0]),
                                                                                       zero_shot[1])])
        found = assess(pairs, np.asarray(pool_proba)[in_pool], scale=scale, opinions=opinions)
        with self._lock:
            self._cache = (key, (found, pairs, image_ids))
        return found, pairs, image_ids

    def _unlabeled_ids(self):
        states = self.store.states()
        return [image["id"] for image in self.store.images("ok")
                if image["id"] not in states or states[image["id"]]["kind"] == "unlabel"]

    # -- the stopping signal ----------------------------------------------------------------

    def _read(self) -> dict:
        path = self.project.root / TRUST_FILE
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, ValueError):   # none yet, or unreadable: start afresh
            return {"model": None, "predictions": {}, "history": []}

    def record_model(self, model_key, predictions: dict) -> None:
        """Compare a newly trained model's stop-set predictions with the previous model's.

        Parameters
        ----------
        model_key : int
            Identifies the model (its training watermark); the same key twice (a restart
            that loaded the saved model) records nothing new.
        predictions : dict
            Image id -> predicted class, on the stop set.
        """
        from .._files import write_atomic

        stored = self._read()
        if stored["model"] == model_key:
            return
        previous = {int(k): v for k, v in stored["predictions"].items()}
        common = sorted(set(previous) & set(predictions))
        if previous and common:
            agreement = prediction_agreement([previous[i] for i in common], [predictions[i] for i in common])
            stored["history"].append({"model": model_key, **agreement})
        stored.update(model=model_key, predictions={str(k): v for k, v in predictions.items()})
        write_atomic(self.project.root / TRUST_FILE, (json.dumps(stored) + "\n").encode())

    def stability(self) -> dict | None:
        """The last model's agreement with the one before, and the stopping signal.

        Returns
        -------
        dict or None
            ``kappa``, ``changed`` (share of the stop set whose prediction changed), ``n``
            (stop-set images) and ``stable``; None before two models were compared.
        """
        history = self._read()["history"]
        if not history:
            return None
        return {**{k: history[-1][k] for k in ("kappa", "changed", "n")},
                "stable": is_stable([h["kappa"] for h in history])}


__all__ = ["TRUST_FILE", "ProjectTrust", "choose_audit", "stop_set"]
