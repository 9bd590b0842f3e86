"""The labeling session: scan, encode, train and query, one step at a time (synchronous).

The model work of the labeling loop, in this order:

1. scan the image folder into the store (new files, missing files, unreadable files);
2. encode the readable images in a random order of the folder (seeded by the project's seed),
   in chunks through the classifier's ``transform`` (progress shown; embeddings cached on disk
   in the project, so this happens once), until the first :data:`FIRST_POOL` are encoded (or
   :data:`FIRST_POOL_SECONDS` have passed): a big folder is labelable in the first minute;
3. whenever no batch is open: retrain on every label (seeded), then let the strategy pick the
   next batch from the unlabeled images encoded so far (an audit share of it drawn at random,
   :mod:`~modal_vlm.labeling.trust`) and store it with the model's guesses and their
   calibrated confidence; then save the classifier (``model.pkl``);
4. encode the rest of the folder, chunk by chunk: each chunk joins the pool of the next query.

:class:`LabelingSession` does each step when asked; the
:class:`~modal_vlm.labeling.worker.BackgroundWorker` asks from its thread, so that the page
stays responsive, and ``modal-vlm label export`` asks directly. An image that cannot be
decoded is set aside as unreadable and the work goes on. The session measures its speeds
(seconds per encoded image, per training epoch, per query), from which the worker estimates
the time left until the next batch.

Training and querying are the library's: the project's learner (:func:`make_classifier`)
inside modAL's ``ActiveLearner`` with a strategy of :func:`modal_vlm.get_strategy`.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from skorch.callbacks import Callback

from .._files import write_atomic
from ..experiment import round_seed
from ..sentinels import NONE
from .scan import scan_images
from .trust import ProjectTrust, choose_audit, stop_set

#: Images per ``transform`` call while encoding the folder (one progress step each; a finished
#: batch waits at most for the chunk being encoded).
ENCODE_CHUNK = 32
#: The first batch is chosen among the first this many images of the folder's random order,
#: zero-shot; the rest joins the pool while they are labeled.
FIRST_POOL = 2000
#: ... or among those encoded after this many seconds of encoding (at least one batch's worth),
#: when the backbone is too slow for FIRST_POOL images in that time.
FIRST_POOL_SECONDS = 30.0
#: At most this many unlabeled images join the UEO fit (drawn with the project's seed).
UEO_UNLABELED = 2000
#: The prompt learner's step budget when the project sets none (``train_steps=None``).
PROMPT_TRAIN_STEPS = 100


class TrainingProgress(Callback):
    """skorch callback: report ``(epoch, epochs of this fit)`` after every epoch.

    Parameters
    ----------
    report : callable
        Called as ``report(epochs_done, fit_epochs)``.
    """

    def __init__(self, report):
        self.report = report

    def on_epoch_end(self, net, **kwargs):
        self.report(len(net.history), net.fit_epochs_)


def epochs_for(n_labeled: int, n_classes: int, train_steps: int, batch_size: int) -> int:
    """The classifier's own epoch schedule (``max_epochs="auto"``), capped at about
    ``train_steps`` optimizer steps, so the wait between batches stays bounded as labels grow.

    Parameters
    ----------
    n_labeled : int
        Labeled images (an epoch is one pass over them, in batches of ``batch_size``).
    n_classes : int
        Number of classes.
    train_steps : int
        The step budget of one training.
    batch_size : int
        The classifier's ``batch_size``.

    Returns
    -------
    int
        At least 1.

    Examples
    --------
    >>> epochs_for(10, 10, 100, 128), epochs_for(40, 10, 100, 128), epochs_for(1000, 10, 100, 128)
    (3, 50, 12)
    """
    from ..model.schedule import shot_schedule_epochs

    budget = max(1, round(train_steps / math.ceil(n_labeled / batch_size)))
    return min(shot_schedule_epochs(n_labeled, n_classes), budget)


def model_key(settings) -> dict:
    """The settings a saved model depends on: when one changes, the model is retrained.

    Parameters
    ----------
    settings : Settings
        The project's settings.

    Returns
    -------
    dict
        Classes, model, weights, learner, fit mode, step budget and seed.
    """
    return {"classes": list(settings.classes), "model": settings.model,
            "pretrained": settings.pretrained, "learner": settings.learner, "fit_mode": settings.fit_mode,
            "train_steps": settings.train_steps, "seed": settings.seed}


def make_classifier(project, callbacks=None):
    """The project's learner (:func:`modal_vlm.model.estimators.get_estimator` of its ``learner``),
    unfitted: zero-shot.

    Parameters
    ----------
    project : Project
        Settings and the embedding cache directory.
    callbacks : list, optional
        skorch callbacks.

    Returns
    -------
    ClipLinearProbe or ClipPromptClassifier
        Seeded with the project's seed; embeddings cached in ``project.cache_dir``. Both
        start at the zero-shot model, so the first labels do not make the model a person is
        labeling with worse; :func:`training_epochs` gives the epochs of a retraining.
    """
    from ..model.estimators import get_estimator

    s = project.settings
    extra = {}
    if s.fit_mode == "ueo":
        extra = {"fit_mode": "ueo", **({"train_visual_norm": False} if s.learner == "prompt" else {})}
    return get_estimator(s.learner)(list(s.classes), model_name=s.model, pretrained=s.pretrained,
                                    cache_dir=str(project.cache_dir), device=s.device, random_state=s.seed,
                                    verbose=0, callbacks=callbacks, **extra)


def training_epochs(settings, n_labeled: int, classifier) -> int:
    """Epochs of one retraining on ``n_labeled`` labels.

    The linear head takes one full-batch step per epoch: ``train_steps``, or its own
    ``max_epochs``. Prompt tuning follows its shot schedule, capped by :func:`epochs_for` at
    ``train_steps`` (default :data:`PROMPT_TRAIN_STEPS`) steps.

    Parameters
    ----------
    settings : Settings
        The project's settings.
    n_labeled : int
        Labels of this retraining.
    classifier : ClipLinearProbe or ClipPromptClassifier
        From :func:`make_classifier`.

    Returns
    -------
    int
        At least 1.
    """
    if settings.learner == "linear":
        return settings.train_steps or classifier.max_epochs
    return epochs_for(n_labeled, len(settings.classes), settings.train_steps or PROMPT_TRAIN_STEPS,
                      classifier.batch_size)


def confidence(proba) -> np.ndarray:
    """The confidence shown with each of the model's guesses: its maximum probability.

    Every front end (the label page's batches, the Label Studio backend's predictions) shows
    this number, of probabilities calibrated on the labels so far
    (:meth:`ProjectTrust.calibrator <modal_vlm.labeling.trust.ProjectTrust.calibrator>`).

    Parameters
    ----------
    proba : array-like of shape (n_images, n_classes)
        Calibrated class probabilities.

    Returns
    -------
    ndarray of shape (n_images,)
        One confidence per image, in [0, 1].

    Examples
    --------
    >>> confidence([[0.2, 0.8], [0.5, 0.5]])
    array([0.8, 0.5])
    """
    return np.asarray(proba, dtype=float).max(axis=1)


class LabelingSession:
    """The labeling loop's model work, synchronous: scan, encode, train, choose, predict, save.

    Every front end drives one: the label page and the Label Studio backend through a
    :class:`~modal_vlm.labeling.worker.BackgroundWorker` (one thread calls it), ``modal-vlm
    label export`` directly (:meth:`prepare`, then :meth:`predict_all`). The steps and their
    order are the module docstring's.

    Parameters
    ----------
    project : Project
        The project.
    store : LabelStore
        Its label store.
    report : callable, optional
        Called as ``report(phase, message, done, total)`` when a step starts or progresses
        (the worker's status); default: nothing.

    Attributes
    ----------
    classifier : ClipLinearProbe or ClipPromptClassifier or None
        The fitted estimator; None: zero-shot.
    model_info : dict or None
        ``model.json`` of :attr:`classifier`.
    trust : ProjectTrust
        Calibration, accuracy estimate and stability of the project.
    model_lock : threading.RLock
        Held while the classifier is used or replaced (the embedding cache is not thread-safe).
    speed : dict
        Measured seconds: ``"image"`` (encoding, per image), ``"epoch"``, ``"query"``.
    """

    def __init__(self, project, store, report=None):
        self.project, self.store = project, store
        self.report = report if report is not None else _no_report
        self.classifier = None
        self.model_info = None
        self.trust = ProjectTrust(project, store)
        self.model_lock = threading.RLock()
        self.speed = {}
        self._lock = threading.Lock()   # guards the encoding state below and speed
        self._pool_proba = None      # (model key, image ids, raw probabilities, margin scale) of the current model,
        #                              and (probabilities, margin scale) of the zero-shot model on the same images
        self._zero_shot = {}         # image id -> the zero-shot model's probabilities (they never change)
        self._encoded = set()        # ids of the images encoded in this process (the pool's)
        self._to_encode = []         # the rest, in the folder's random order
        self._n_readable = 0

    def progress(self) -> tuple:
        """How far the encoding is.

        Returns
        -------
        tuple of int
            ``(encoded, readable)``: images in the pool so far, readable images.
        """
        with self._lock:
            return len(self._encoded), self._n_readable

    def has_unencoded(self) -> bool:
        """Whether images of the folder remain to be encoded.

        Returns
        -------
        bool
            True while :meth:`encode_rest` has work.
        """
        with self._lock:
            return bool(self._to_encode)

    # -- scan, load, encode ---------------------------------------------------------------

    def prepare(self, encode_all=False) -> None:
        """Scan the folder, load the saved model and encode the first images (steps 1 and 2).

        The worker does this first, and again when a file vanished or changed under it; an
        export without a server calls it with ``encode_all=True``. Embeddings come from the
        disk cache after the first time, so a repeat costs little more than reading the files.

        Parameters
        ----------
        encode_all : bool, default=False
            Encode every readable image before returning, not only the first pool.
        """
        settings = self.project.settings
        self.report("scanning", f"scanning {settings.images_dir}, loading {settings.model}")
        root = self.project.root
        with ThreadPoolExecutor(1, thread_name_prefix="modal-vlm-load-model") as pool:
            loading = pool.submit(self._load_model)   # the model loads while the folder is scanned
            scan = scan_images(settings.images_dir, exclude=[root])
            self.store.sync_images(scan.found)
            loading.result()   # its error, if any, is raised here
        readable = self.store.images("ok")
        ids = {image["id"] for image in readable}
        order = np.random.default_rng(settings.seed).permutation(len(readable))
        with self._lock:
            self._encoded &= ids      # a file that vanished or became unreadable leaves the pool
            self._to_encode = [readable[i] for i in order if readable[i]["id"] not in self._encoded]
            self._n_readable = len(readable)
        self.encode_first(len(readable) if encode_all else FIRST_POOL)

    def _load_model(self):
        """``model.pkl`` if it was trained with the current settings; else it is retrained.

        The labels are the source of truth: a saved model that cannot be loaded (a file from
        another library version) is retrained from them, never fatal.
        """
        info = self.project.model_info()
        if self.classifier is None and info is not None and info.get("key") == model_key(self.project.settings):
            try:
                with open(self.project.model_file, "rb") as f:
                    classifier = pickle.load(f)
                classifier.set_params(cache_dir=str(self.project.cache_dir),
                                      device=self.project.settings.device)
                with self.model_lock:
                    self.classifier, self.model_info = classifier, info
            except Exception:  # noqa: BLE001 - any unreadable model means: train again
                pass
        self.current().backbone_   # load the frozen encoders now, before encoding starts

    def current(self):
        """The classifier of the next prediction.

        Returns
        -------
        ClipLinearProbe or ClipPromptClassifier
            :attr:`classifier`, or a zero-shot one before the first training.
        """
        return self.classifier if self.classifier is not None else make_classifier(self.project)

    def path(self, image) -> str:
        """The file of a store row.

        Parameters
        ----------
        image : dict
            A row of the store (its ``path`` is relative to the image folder).

        Returns
        -------
        str
            The file's path.
        """
        return os.path.join(self.project.settings.images_dir, image["path"])

    def encode_first(self, n_first) -> None:
        """Encode until ``n_first`` images are in the pool (or :data:`FIRST_POOL_SECONDS` passed
        with a batch's worth), with the encoding phase reported; the rest is left to
        :meth:`encode_rest`.

        Parameters
        ----------
        n_first : int
            Images the pool should hold (at most the readable ones).
        """
        with self._lock:
            n_encoded, total = len(self._encoded), len(self._encoded) + len(self._to_encode)
        target = min(n_first, total)
        message = (f"encoding {total} images" if target == total
                   else f"encoding the first {target} of {total} images")
        enough = max(self.project.settings.images_per_batch, 1)
        started = time.perf_counter()
        self.report("encoding", message, n_encoded, target)
        while self.has_unencoded() and self.progress()[0] < target:
            if self.progress()[0] >= enough and time.perf_counter() - started > FIRST_POOL_SECONDS:
                break
            self._encode_chunk()
            self.report("encoding", message, self.progress()[0], target)

    def encode_rest(self, interrupted) -> None:
        """Encode the rest of the folder chunk by chunk, until done or ``interrupted()`` (the
        worker's wake-up: a finished batch goes first, it waits at most for one chunk).

        Parameters
        ----------
        interrupted : callable
            Checked before every chunk; True stops the encoding.
        """
        while self.has_unencoded() and not interrupted():
            self._encode_chunk()

    def _encode_chunk(self):
        """Encode the next :data:`ENCODE_CHUNK` images; they join the pool, unreadable ones are
        set aside. Measures the seconds per image."""
        with self._lock:
            chunk, self._to_encode = self._to_encode[:ENCODE_CHUNK], self._to_encode[ENCODE_CHUNK:]
        started = time.perf_counter()
        encoded = []
        # The lock: an export's predict_all() encodes too, and the embedding cache is not
        # thread-safe; an export waits for at most this chunk.
        with self.model_lock:
            clf = self.current()
            try:
                clf.transform([self.path(image) for image in chunk])
                encoded = chunk
            except (ValueError, OSError):
                for image in chunk:   # find the culprits; the others are encoded
                    try:
                        clf.transform([self.path(image)])
                        encoded.append(image)
                    except (ValueError, OSError) as exc:   # the library names the file
                        self.store.mark_unreadable(image["id"], str(exc))
        with self._lock:
            self._encoded.update(image["id"] for image in encoded)
            self._n_readable -= len(chunk) - len(encoded)
            per_image = (time.perf_counter() - started) / max(1, len(chunk))
            self.speed["image"] = per_image if "image" not in self.speed else \
                0.7 * self.speed["image"] + 0.3 * per_image   # smoothed: the cache makes chunks uneven

    def _encoded_images(self) -> list[dict]:
        """Readable images encoded so far (rows of the store): scoring and querying must not
        encode the whole folder."""
        with self._lock:
            encoded = set(self._encoded)
        return [image for image in self.store.images("ok") if image["id"] in encoded]

    # -- train ----------------------------------------------------------------------------

    def labeled(self):
        """The labels of readable images, as the learner is taught them.

        Returns
        -------
        images : list of dict
            Rows of the store.
        labels : list of int
            A class index or, for "none of these classes", :data:`modal_vlm.NONE`: the
            learner's own label, taught as in a modAL loop.
        """
        classes = list(self.project.settings.classes)
        labeled, y = [], []
        for row in self.store.labels():
            if row["status"] != "ok":
                continue  # its label is kept; the file cannot be read now
            if row["kind"] == "class" and row["label"] in classes:
                labeled.append(row)
                y.append(classes.index(row["label"]))
            elif row["kind"] == "ood":
                labeled.append(row)
                y.append(NONE)
        return labeled, y

    def needs_training(self, open_batch=None) -> bool:
        """Whether the labels changed since the current model was trained.

        Parameters
        ----------
        open_batch : dict, optional
            The open batch: a model older than its round (a crash kept it from being saved)
            is trained again.

        Returns
        -------
        bool
            False without a label (the zero-shot model is the model).
        """
        labeled, _ = self.labeled()
        if not labeled:
            return False
        info = self.model_info
        if self.classifier is None or info is None:
            return True
        if open_batch is not None:  # restore a model a crash kept from being saved
            return info["round"] < open_batch["model_round"]
        return info["trained_through"] < self.store.last_event_id()

    def train(self, round_=None) -> None:
        """Train a new classifier on every label (seeded); it becomes :attr:`classifier`.

        Parameters
        ----------
        round_ : int, optional
            The model's round in ``model.json``; default: the batches finished so far.
        """
        settings = self.project.settings
        watermark = self.store.last_event_id()
        if round_ is None:
            round_ = sum(batch["finished_at"] is not None for batch in self.store.batches())
        labeled, y = self.labeled()
        n_ood = sum(label == NONE for label in y)
        message = f"training on {len(labeled)} labels"
        progress = TrainingProgress(lambda done, total: self.report("training", message, done, total))
        clf = make_classifier(self.project, callbacks=[(_PROGRESS, progress)])
        epochs = training_epochs(settings, max(1, len(y) - n_ood), clf)
        clf.set_params(max_epochs=epochs)
        self.report("training", message, 0, epochs)
        fit_params = {}
        if settings.fit_mode == "ueo":
            fit_params["X_unlabeled"] = self._ueo_unlabeled()
        started = time.perf_counter()
        with self.model_lock:   # fit reads the embedding cache, as an export's predict_all() does
            clf.fit(np.array([self.path(row) for row in labeled]), np.asarray(y), **fit_params)
        seconds = time.perf_counter() - started
        with self._lock:
            self.speed["epoch"] = seconds / max(1, epochs)
        _detach_progress(clf)
        info = {"round": round_, "trained_through": watermark, "n_labels": len(labeled) - n_ood,
                "n_ood": n_ood, "epochs": epochs, "seconds": round(seconds, 3),
                "trained_at": time.time(), "key": model_key(settings), "saved": False}
        with self.model_lock:
            self.classifier, self.model_info = clf, info

    def _ueo_unlabeled(self):
        """UEO's unlabeled images: (a sample of) the pool; those labeled "none of these
        classes" are taught as :data:`modal_vlm.NONE`, which UEO's loss uses too."""
        pool = self.pool()
        if len(pool) > UEO_UNLABELED:
            rng = np.random.default_rng(self.project.settings.seed)
            pool = [pool[i] for i in np.sort(rng.choice(len(pool), UEO_UNLABELED, replace=False))]
        paths = [self.path(row) for row in pool]
        return np.array(paths) if paths else None

    # -- score and query ------------------------------------------------------------------

    def pool(self) -> list[dict]:
        """Encoded readable images without a decision (skipped ones are set aside, not pooled).

        While the pool is empty and images remain to be encoded, they are encoded first: the
        labels never run out before the folder does.

        Returns
        -------
        list of dict
            Rows of the store.
        """
        while True:
            states = self.store.states()
            pool = [image for image in self._encoded_images()
                    if image["id"] not in states or states[image["id"]]["kind"] == "unlabel"]
            if pool or not self.has_unencoded():
                return pool
            self.encode_first(self.progress()[0] + FIRST_POOL)

    def _model_key(self) -> int:
        """The current model's training watermark (0: zero-shot)."""
        return self.model_info["trained_through"] if self.model_info else 0

    def score(self) -> None:
        """Once per model: its probabilities on every encoded image (the estimate's pool) and
        its predictions on the stop set, compared with the previous model's."""
        key = self._model_key()
        images = self._encoded_images()
        if self._pool_proba is not None and self._pool_proba[0] == key and len(self._pool_proba[1]) == len(images):
            return
        self.report("scoring", f"scoring {len(images)} images")
        ids = np.array([image["id"] for image in images], dtype=np.intp)
        proba, zero_shot = self._predict_proba(images), self._zero_shot_proba(images)
        self._pool_proba = (key, ids, proba, self.trust.scale(ids, proba),
                            (zero_shot, self.trust.scale(ids, zero_shot)))
        position = {int(i): k for k, i in enumerate(ids)}
        classes = self.project.settings.classes
        self.trust.record_model(key, {i: classes[int(proba[position[i]].argmax())]
                                      for i in stop_set(ids.tolist(), self.project.settings.seed)})

    def _predict_proba(self, images) -> np.ndarray:
        """The current model's raw class probabilities of store rows (none: an empty array)."""
        with self.model_lock:
            if not images:
                return np.zeros((0, len(self.project.settings.classes)), np.float32)
            clf = self.current()
            return clf.predict_proba_from_features(clf.transform([self.path(image) for image in images]))

    def _zero_shot_proba(self, images) -> np.ndarray:
        """The zero-shot model's probabilities of store rows, each computed once (a suspect
        label's third opinion, :meth:`ProjectTrust.assessment`)."""
        new = [image for image in images if image["id"] not in self._zero_shot]
        if new:
            with self.model_lock:
                rows = self.current().zero_shot_proba([self.path(image) for image in new])
            self._zero_shot.update(zip((image["id"] for image in new), rows))
        n_classes = len(self.project.settings.classes)
        return np.array([self._zero_shot[image["id"]] for image in images], np.float32).reshape(len(images), n_classes)

    def assessment(self):
        """What the labels bought so far (:meth:`ProjectTrust.assessment`), or None before the
        images are scored.

        Returns
        -------
        tuple or None
            ``(Assessment, pairs, image_ids)``.
        """
        scored = self._pool_proba
        return None if scored is None else self.trust.assessment(*scored)

    def choose(self, pool, n, query_number) -> np.ndarray:
        """The strategy's choice of ``n`` images of ``pool`` under the current model.

        Parameters
        ----------
        pool : list of dict
            Candidate images (rows of the store, as :meth:`pool` returns them).
        n : int
            Images to choose, at most ``len(pool)``.
        query_number : int
            Which query of the project this is (1 for the first); seeds the strategy
            through :func:`~modal_vlm.experiment.round_seed` with the project's seed.

        Returns
        -------
        ndarray of int
            Positions in ``pool``, in the strategy's order.
        """
        settings = self.project.settings
        X_pool = np.array([self.path(image) for image in pool])
        with self.model_lock:
            learner = self._learner()
            picked, _ = learner.query(X_pool, n_instances=n, random_state=round_seed(settings.seed, query_number))
        return np.asarray(picked, dtype=int).reshape(-1)

    def _learner(self):
        """modAL's ``ActiveLearner`` of the current model and strategy, holding the labeled set
        (what PCB's class counts, Coreset's distances and open-set weights read) without a refit:
        modAL's constructor would fit on ``X_training``, so the set is given after it."""
        from modAL.models import ActiveLearner

        from ..strategies import get_strategy

        strategy = get_strategy(self.project.settings.strategy)
        learner = ActiveLearner(estimator=self.current(), query_strategy=strategy)
        labeled, y = self.labeled()
        if labeled:
            learner.X_training = np.array([self.path(row) for row in labeled])
            learner.y_training = np.asarray(y)
        return learner

    def next_batch(self, pool, query_number):
        """The next batch of ``pool``: the strategy's picks and the audit picks, shuffled.

        The one place where a next batch is chosen, for every front end (the label page, the
        Label Studio backend): the same labels, model and ``query_number`` give the same
        images in the same order. The audit picks
        (:func:`~modal_vlm.labeling.trust.choose_audit`, drawn at random) sit anywhere in the
        batch, like any other card.

        Parameters
        ----------
        pool : list of dict
            Candidate images (rows of the store, as :meth:`pool` returns them).
        query_number : int
            Which query of the project this is (1 for the first).

        Returns
        -------
        picked : ndarray of int
            Positions in ``pool``, in the batch's order.
        audit : ndarray of int
            The positions among them that are audit picks.
        """
        settings = self.project.settings
        n = min(settings.images_per_batch, len(pool))
        audit = choose_audit(len(pool), n, query_number, settings)
        rest = np.delete(np.arange(len(pool)), audit)
        picked = np.concatenate([rest[self.choose([pool[i] for i in rest], n - len(audit), query_number)], audit])
        if len(audit):   # audit picks anywhere on the page, like any other card
            picked = picked[np.random.default_rng([settings.seed, query_number]).permutation(len(picked))]
        return picked, audit

    def query(self):
        """Choose the next batch of the pool and store it with the model's calibrated guesses.

        Returns
        -------
        dict or None
            The new batch (:meth:`LabelStore.batch`), or None when the pool is empty.
        """
        settings = self.project.settings
        pool = self.pool()
        if not pool:
            return None
        n = min(settings.images_per_batch, len(pool))
        self.report("querying", f"{settings.strategy} chooses {n} of {len(pool)} images")
        started = time.perf_counter()
        picked, audit = self.next_batch(pool, len(self.store.batches()) + 1)
        proba = self._predict_proba([pool[i] for i in picked])
        with self._lock:
            self.speed["query"] = time.perf_counter() - started
        scale = self.margin_scale()
        shown, temperature = self.trust.calibrate(proba, scale)
        items = [(pool[i]["id"], settings.classes[int(p.argmax())], float(c))
                 for i, p, c in zip(picked, shown, confidence(shown))]
        n_labels = self.model_info["n_labels"] if self.model_info else 0
        scores = [{"audit": i in audit, "model_labels": n_labels, "proba": p.tolist(), "temperature": temperature,
                   "scale": scale} for i, p in zip(picked, proba)]
        round_ = self.model_info["round"] if self.model_info else 0
        batch_id = self.store.create_batch(items, strategy=settings.strategy, model_round=round_, scores=scores)
        return self.store.batch(batch_id)

    def save(self) -> None:
        """Save a model trained since the last save: ``model.pkl`` (the estimator, pickled),
        then ``model.json`` that describes it. Nothing to save: nothing happens."""
        if self.model_info is None or self.model_info["saved"]:
            return
        self.report("saving", "saving the model")
        with self.model_lock:
            data = pickle.dumps(self.classifier, protocol=pickle.HIGHEST_PROTOCOL)
            info = {**self.model_info, "saved": True}
        write_atomic(self.project.model_file, data)
        write_atomic(self.project.model_info_file, (json.dumps(info, indent=2) + "\n").encode())
        with self.model_lock:
            self.model_info = info

    def predict_all(self):
        """Calibrated class probabilities of every readable image under the current model.

        Returns
        -------
        images : list of dict
            The readable images (``id``, ``path``...).
        proba : ndarray of shape (n_images, n_classes)
            Their probabilities (zero-shot before the first training), calibrated by the
            labels so far (:mod:`~modal_vlm.labeling.trust`; unchanged before enough labels).
        """
        images = self.store.images("ok")
        proba = self._predict_proba(images)
        if not images:
            return images, proba
        shown, _ = self.trust.calibrate(proba, self.trust.scale([image["id"] for image in images], proba))
        return images, shown

    def predict_one(self, image_id) -> np.ndarray:
        """Calibrated class probabilities of one image, as :meth:`predict_all` gives them.

        Parameters
        ----------
        image_id : int
            An image of the store.

        Returns
        -------
        ndarray of shape (n_classes,)
            Its probabilities.
        """
        proba = self._predict_proba([self.store.image(image_id)])
        shown, _ = self.trust.calibrate(proba, self.margin_scale())
        return shown[0]

    def margin_scale(self) -> float:
        """The current model's margin scale on the stop set (:meth:`ProjectTrust.scale`), from
        :meth:`score`'s probabilities (scored first if this model has not been).

        Returns
        -------
        float
            The scale the shown confidences and the stored pairs of this model use.
        """
        self.score()
        return self._pool_proba[3]


#: The name of the training progress callback in the estimator's ``callbacks``.
_PROGRESS = "label_app_progress"


def _no_report(phase, message, done=0, total=0):
    pass


def _detach_progress(classifier) -> None:
    """Remove the session's progress callback from a fitted estimator: it reports to this
    session (a closure, which cannot be pickled), not to whoever loads the saved model."""
    classifier.callbacks = None
    classifier.callbacks_ = [(name, cb) for name, cb in classifier.callbacks_ if name != _PROGRESS]


__all__ = ["FIRST_POOL", "LabelingSession", "TrainingProgress", "confidence", "epochs_for", "make_classifier",
           "model_key", "training_epochs"]
