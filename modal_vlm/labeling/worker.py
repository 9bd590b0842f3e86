"""The background worker: scan, encode, train and query, while the page stays responsive.

One thread does all the model work, in this order:

1. scan the image folder into the store (new files, missing files, unreadable files);
2. encode the readable images in a random order of the folder (seeded by the project's seed),
   in chunks through the classifier's ``transform`` (progress shown; embeddings cached on disk
   in the project, so this happens once), until the first :data:`FIRST_POOL` are encoded (or
   :data:`FIRST_POOL_SECONDS` have passed): a big folder is labelable in the first minute;
3. whenever no batch is open: retrain on every label (seeded), then let the strategy pick the
   next batch from the unlabeled images encoded so far (an audit share of it drawn at random,
   :mod:`~modal_vlm.labeling.trust`) and store it with the model's guesses and their
   calibrated confidence; then save the classifier (``model.pkl``);
4. encode the rest of the folder in the background, chunk by chunk: each chunk joins the pool
   of the next query, and a finished batch (a wake-up) is served before the next chunk.

The worker then sleeps until :meth:`LabelingWorker.wake` (a finished batch, an edit). A
failure is reported in :meth:`LabelingWorker.status` and the worker waits for the next
wake-up: labels keep being recorded whatever the worker does. An image that cannot be
decoded is set aside as unreadable and the work goes on. The status carries an estimate of
the time left until the next batch, from the speeds measured so far (seconds per encoded
image, per training epoch, per query).

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
import traceback
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from skorch.callbacks import Callback

from ..experiment import round_seed
from ..runner.rundir import write_atomic
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
    (50, 100, 12)
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


class LabelingWorker:
    """Scan, encode, train and query in a background thread (see the module docstring).

    Parameters
    ----------
    project : Project
        The project.
    store : LabelStore
        Its label store.
    """

    def __init__(self, project, store):
        self.project, self.store = project, store
        self.classifier = None       # the fitted estimator; None: zero-shot
        self.model_info = None       # model.json of self.classifier
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._lock = threading.Lock()         # guards _status and the wake/idle pair
        self._model_lock = threading.RLock()  # the classifier: the worker and exports
        self._status = {"phase": "starting", "message": "starting", "done": 0, "total": 0,
                        "error": None, "seconds_left": None}
        self._thread = None
        self.trust = ProjectTrust(project, store)
        self._pool_proba = None      # (model key, image ids, raw probabilities) of the current model
        self._encoded = set()        # ids of the images encoded in this process (the pool's)
        self._to_encode = []         # the rest, in the folder's random order
        self._n_readable = 0
        self._speed = {}             # measured seconds: "image" (encoding), "epoch", "query"
        self._phase_started = time.perf_counter()

    # -- control --------------------------------------------------------------------------

    def start(self) -> "LabelingWorker":
        """Start the thread (once).

        Returns
        -------
        LabelingWorker
            ``self``.
        """
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="modal-vlm-label-worker",
                                            daemon=True)
            self._thread.start()
        return self

    def wake(self) -> None:
        """Ask for the next step (retrain and query if no batch is open)."""
        with self._lock:
            self._idle.clear()
            self._wake.set()

    def stop(self, timeout=None) -> None:
        """Stop the thread after its current step.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for it.
        """
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_idle(self, timeout=60.0) -> dict:
        """Block until the worker has nothing to do (or failed), for tests and scripts.

        Parameters
        ----------
        timeout : float, default=60
            Seconds to wait.

        Returns
        -------
        dict
            :meth:`status` at that point.

        Raises
        ------
        TimeoutError
            The worker is still busy after ``timeout`` seconds.
        """
        if not self._idle.wait(timeout):
            raise TimeoutError(f"the labeling worker is still busy after {timeout} s: {self.status()}")
        return self.status()

    def status(self) -> dict:
        """What the worker is doing, for the page.

        Returns
        -------
        dict
            ``phase`` (``starting``, ``scanning``, ``encoding``, ``training``, ``scoring``, ``querying``,
            ``saving``, ``ready``: a batch is open, ``done``: nothing left to label,
            ``error``), ``message``, progress ``done`` / ``total``, ``error`` (the failure,
            or None), ``seconds_left`` (estimated seconds until the next batch is on screen,
            from the speeds measured so far; None when there is nothing to go on),
            ``encoded`` / ``readable`` (images in the pool so far / readable images: the
            background encoding's progress).
        """
        with self._lock:
            return {**self._status, "encoded": len(self._encoded), "readable": self._n_readable}

    def _set(self, phase, message, done=0, total=0, error=None):
        with self._lock:
            if phase != self._status["phase"]:
                self._phase_started = time.perf_counter()
            self._status = {"phase": phase, "message": message, "done": done, "total": total,
                            "error": error, "seconds_left": self._seconds_left(phase, done, total)}

    def _seconds_left(self, phase, done, total):
        """Seconds until the next batch, from the measured speeds (None without a measurement)."""
        speed = self._speed
        query = speed.get("query", 0.0)
        if phase == "encoding" and "image" in speed:
            return round((total - done) * speed["image"] + query, 1)
        if phase == "training" and done:   # this fit's own pace
            per_epoch = (time.perf_counter() - self._phase_started) / done
            return round((total - done) * per_epoch + query, 1)
        if phase == "training" and "epoch" in speed:
            return round(total * speed["epoch"] + query, 1)
        if phase == "querying" and "query" in speed:
            return round(max(0.0, query - (time.perf_counter() - self._phase_started)), 1)
        return None

    # -- the thread -----------------------------------------------------------------------

    def _run(self):
        prepared = False
        while not self._stop.is_set():
            with self._lock:
                self._wake.clear()
            try:
                if not prepared:
                    self.prepare()
                    prepared = True
                try:
                    self._step()
                except (FileNotFoundError, ValueError):   # a file changed under us: rescan, retry
                    self.prepare()
                    self._step()
                self._encode_rest()
            except Exception as exc:  # reported on the page; labeling goes on
                self._set("error", f"{type(exc).__name__}: {exc}", error=traceback.format_exc())
            with self._lock:
                if not self._wake.is_set():   # else a wake-up came during the step: go on
                    self._idle.set()
            self._wake.wait()

    def prepare(self, encode_all=False) -> None:
        """Scan the folder, load the saved model and encode the first images (steps 1 and 2).

        The thread does this first, and again when a file vanished or changed under it; an
        export without a server calls it with ``encode_all=True``. Embeddings come from the
        disk cache after the first time, so a repeat costs little more than reading the files.

        Parameters
        ----------
        encode_all : bool, default=False
            Encode every readable image before returning, not only the first pool.
        """
        settings = self.project.settings
        self._set("scanning", f"scanning {settings.images_dir}, loading {settings.model}")
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
        self._encode_first(len(readable) if encode_all else FIRST_POOL)

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
                with self._model_lock:
                    self.classifier, self.model_info = classifier, info
            except Exception:  # noqa: BLE001 - any unreadable model means: train again
                pass
        self._current().backbone_   # load the frozen encoders now, before encoding starts

    def _zero_shot(self):
        return make_classifier(self.project)

    def _current(self):
        return self.classifier if self.classifier is not None else self._zero_shot()

    def _path(self, image) -> str:
        return os.path.join(self.project.settings.images_dir, image["path"])

    def _encode_first(self, n_first):
        """Encode until ``n_first`` images are in the pool (or :data:`FIRST_POOL_SECONDS` passed
        with a batch's worth), with the encoding phase shown; the rest is left to
        :meth:`_encode_rest`."""
        target = min(n_first, len(self._encoded) + len(self._to_encode))
        total = len(self._encoded) + len(self._to_encode)
        message = (f"encoding {total} images" if target == total
                   else f"encoding the first {target} of {total} images")
        enough = max(self.project.settings.images_per_batch, 1)
        started = time.perf_counter()
        self._set("encoding", message, len(self._encoded), target)
        while self._to_encode and len(self._encoded) < target:
            if len(self._encoded) >= enough and time.perf_counter() - started > FIRST_POOL_SECONDS:
                break
            self._encode_chunk()
            self._set("encoding", message, len(self._encoded), target)

    def _encode_rest(self):
        """Encode the rest of the folder chunk by chunk, until done or woken (a finished batch
        goes first: it waits at most for one chunk)."""
        while self._to_encode and not self._wake.is_set() and not self._stop.is_set():
            self._encode_chunk()

    def _encode_chunk(self):
        """Encode the next :data:`ENCODE_CHUNK` images; they join the pool, unreadable ones are
        set aside. Measures the seconds per image."""
        with self._lock:
            chunk, self._to_encode = self._to_encode[:ENCODE_CHUNK], self._to_encode[ENCODE_CHUNK:]
        started = time.perf_counter()
        encoded = []
        # The lock: an export's predict() encodes too, and the embedding cache is not
        # thread-safe; an export waits for at most this chunk.
        with self._model_lock:
            clf = self._current()
            try:
                clf.transform([self._path(image) for image in chunk])
                encoded = chunk
            except (ValueError, OSError):
                for image in chunk:   # find the culprits; the others are encoded
                    try:
                        clf.transform([self._path(image)])
                        encoded.append(image)
                    except (ValueError, OSError) as exc:   # the library names the file
                        self.store.mark_unreadable(image["id"], str(exc))
        with self._lock:
            self._encoded.update(image["id"] for image in encoded)
            self._n_readable -= len(chunk) - len(encoded)
            per_image = (time.perf_counter() - started) / max(1, len(chunk))
            self._speed["image"] = per_image if "image" not in self._speed else \
                0.7 * self._speed["image"] + 0.3 * per_image   # smoothed: the cache makes chunks uneven

    def _step(self):
        open_batch = self.store.batch()
        if self._needs_training(open_batch):
            self._train()
        self._score_images()
        if open_batch is None:
            open_batch = self._query()   # on screen from here on
        if self.model_info is not None and not self.model_info["saved"]:
            self._save_model()
        if open_batch is None:
            self._set("done", "every readable image is labeled or skipped")
        else:
            self._set("ready", f"batch {open_batch['id']}: {len(open_batch['items'])} images")

    def _labeled(self):
        """Labels of readable images: (images, labels), a class index or, for "none of these
        classes", :data:`modal_vlm.NONE`: the learner's own label, taught as in a modAL loop."""
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

    def _needs_training(self, open_batch) -> bool:
        labeled, _ = self._labeled()
        if not labeled:
            return False
        info = self.model_info
        if self.classifier is None or info is None:
            return True
        if open_batch is not None:  # restore a model a crash kept from being saved
            return info["round"] < open_batch["model_round"]
        return info["trained_through"] < self.store.last_event_id()

    def _finished_batches(self) -> int:
        return sum(batch["finished_at"] is not None for batch in self.store.batches())

    def _train(self):
        settings = self.project.settings
        watermark = self.store.last_event_id()
        finished = self._finished_batches()
        labeled, y = self._labeled()
        n_ood = sum(label == NONE for label in y)
        message = f"training on {len(labeled)} labels"
        progress = TrainingProgress(lambda done, total: self._set("training", message, done, total))
        clf = make_classifier(self.project, callbacks=[("label_app_progress", progress)])
        epochs = training_epochs(settings, max(1, len(y) - n_ood), clf)
        clf.set_params(max_epochs=epochs)
        self._set("training", message, 0, epochs)
        fit_params = {}
        if settings.fit_mode == "ueo":
            fit_params["X_unlabeled"] = self._ueo_unlabeled()
        started = time.perf_counter()
        with self._model_lock:   # fit reads the embedding cache, as an export's predict() does
            clf.fit(np.array([self._path(row) for row in labeled]), np.asarray(y), **fit_params)
        seconds = time.perf_counter() - started
        with self._lock:
            self._speed["epoch"] = seconds / max(1, epochs)
        # The progress callback belongs to this worker, not to the exported classifier.
        clf.callbacks = None
        clf.callbacks_ = [(name, cb) for name, cb in clf.callbacks_ if name != "label_app_progress"]
        info = {"round": finished, "trained_through": watermark, "n_labels": len(labeled) - n_ood,
                "n_ood": n_ood, "epochs": epochs, "seconds": round(seconds, 3),
                "trained_at": time.time(), "key": model_key(settings), "saved": False}
        with self._model_lock:
            self.classifier, self.model_info = clf, info

    def _ueo_unlabeled(self):
        """UEO's unlabeled images: (a sample of) the pool; those labeled "none of these
        classes" are taught as :data:`modal_vlm.NONE`, which UEO's loss uses too."""
        pool = self._pool()
        if len(pool) > UEO_UNLABELED:
            rng = np.random.default_rng(self.project.settings.seed)
            pool = [pool[i] for i in np.sort(rng.choice(len(pool), UEO_UNLABELED, replace=False))]
        paths = [self._path(row) for row in pool]
        return np.array(paths) if paths else None

    def _pool(self) -> list[dict]:
        """Encoded readable images without a decision (skipped ones are set aside, not pooled).

        While the pool is empty and images remain to be encoded, they are encoded first: the
        labels never run out before the folder does.
        """
        while True:
            states = self.store.states()
            with self._lock:
                encoded = set(self._encoded)
            pool = [image for image in self.store.images("ok") if image["id"] in encoded
                    and (image["id"] not in states or states[image["id"]]["kind"] == "unlabel")]
            if pool or not self._to_encode:
                return pool
            self._encode_first(len(self._encoded) + FIRST_POOL)

    def _model_key(self) -> int:
        """The current model's training watermark (0: zero-shot)."""
        return self.model_info["trained_through"] if self.model_info else 0

    def _score_images(self):
        """Once per model: its probabilities on every readable image (the estimate's pool, the
        exports) and its predictions on the stop set, compared with the previous model's."""
        key = self._model_key()
        with self._lock:   # the images encoded so far: scoring must not encode the whole folder
            encoded = set(self._encoded)
        images = [image for image in self.store.images("ok") if image["id"] in encoded]
        if self._pool_proba is not None and self._pool_proba[0] == key and len(self._pool_proba[1]) == len(images):
            return
        self._set("scoring", f"scoring {len(images)} images")
        with self._model_lock:
            clf = self._current()
            proba = clf.predict_proba_from_features(clf.transform([self._path(image) for image in images])) \
                if images else np.zeros((0, len(self.project.settings.classes)), np.float32)
        ids = np.array([image["id"] for image in images], dtype=np.intp)
        self._pool_proba = (key, ids, proba)
        position = {int(i): k for k, i in enumerate(ids)}
        classes = self.project.settings.classes
        self.trust.record_model(key, {i: classes[int(proba[position[i]].argmax())]
                                      for i in stop_set(ids.tolist(), self.project.settings.seed)})

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
            Candidate images (rows of the store, as :meth:`_pool` returns them).
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
        from modAL.models import ActiveLearner

        from ..strategies import get_strategy

        settings = self.project.settings
        X_pool = np.array([self._path(image) for image in pool])
        labeled, y = self._labeled()
        with self._model_lock:
            clf = self._current()
            learner = ActiveLearner(estimator=clf, query_strategy=get_strategy(settings.strategy))
            if labeled:  # what PCB's class counts, Coreset's distances, open-set weights read; no refit
                learner.X_training = np.array([self._path(row) for row in labeled])
                learner.y_training = np.asarray(y)
            picked, _ = learner.query(X_pool, n_instances=n, random_state=round_seed(settings.seed, query_number))
        return np.asarray(picked, dtype=int).reshape(-1)

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
            Candidate images (rows of the store, as :meth:`_pool` returns them).
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

    def _query(self):
        settings = self.project.settings
        pool = self._pool()
        if not pool:
            return None
        n = min(settings.images_per_batch, len(pool))
        self._set("querying", f"{settings.strategy} chooses {n} of {len(pool)} images")
        started = time.perf_counter()
        picked, audit = self.next_batch(pool, len(self.store.batches()) + 1)
        calibrator = self.trust.calibrator()
        with self._model_lock:
            clf = self._current()
            proba = clf.predict_proba_from_features(clf.transform([self._path(pool[i]) for i in picked]))
        with self._lock:
            self._speed["query"] = time.perf_counter() - started
        shown = calibrator.transform(proba)
        items = [(pool[i]["id"], settings.classes[int(p.argmax())], float(c))
                 for i, p, c in zip(picked, shown, confidence(shown))]
        n_labels = self.model_info["n_labels"] if self.model_info else 0
        temperature = calibrator.temperature_ if calibrator.fitted_ else None
        scores = [{"audit": i in audit, "model_labels": n_labels, "proba": p.tolist(), "temperature": temperature}
                  for i, p in zip(picked, proba)]
        round_ = self.model_info["round"] if self.model_info else 0
        batch_id = self.store.create_batch(items, strategy=settings.strategy, model_round=round_, scores=scores)
        return self.store.batch(batch_id)

    def _save_model(self):
        """``model.pkl`` (the estimator, pickled), then ``model.json`` that describes it."""
        self._set("saving", "saving the model")
        with self._model_lock:
            data = pickle.dumps(self.classifier, protocol=pickle.HIGHEST_PROTOCOL)
            info = {**self.model_info, "saved": True}
        write_atomic(self.project.model_file, data)
        write_atomic(self.project.model_info_file, (json.dumps(info, indent=2) + "\n").encode())
        with self._model_lock:
            self.model_info = info

    # -- exports --------------------------------------------------------------------------

    def predict(self):
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
        with self._model_lock:
            clf = self._current()
            if not images:
                return images, np.zeros((0, len(self.project.settings.classes)), np.float32)
            proba = clf.predict_proba_from_features(clf.transform([self._path(image) for image in images]))
        return images, self.trust.calibrator().transform(proba)


__all__ = ["LabelingWorker", "TrainingProgress", "confidence", "epochs_for", "make_classifier", "model_key",
           "training_epochs"]
