"""The background worker: scan, encode, train and query, while the page stays responsive.

One thread does all the model work, in this order:

1. scan the image folder into the store (new files, missing files, unreadable files);
2. encode every readable image, in chunks through ``ClipPromptClassifier.transform``
   (progress shown; embeddings cached on disk in the project, so this happens once);
3. whenever no batch is open: retrain on every label (a fresh prompt, seeded), then let the
   strategy pick the next batch from the unlabeled images and store it with the model's
   guesses; then save the classifier (``model.pkl``).

The worker then sleeps until :meth:`LabelingWorker.wake` (a finished batch, an edit). A
failure is reported in :meth:`LabelingWorker.status` and the worker waits for the next
wake-up: labels keep being recorded whatever the worker does. An image that cannot be
decoded is set aside as unreadable and the work goes on.

Training and querying are the library's: :class:`~modal_vlm.ClipPromptClassifier` inside
modAL's ``ActiveLearner`` with a strategy of :func:`modal_vlm.get_strategy`.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import threading
import time
import traceback

import numpy as np
from skorch.callbacks import Callback

from ..experiment import round_seed
from ..runner.rundir import write_atomic
from ..sentinels import NONE
from .scan import scan_images

#: Images per ``transform`` call while encoding the folder (one progress step each).
ENCODE_CHUNK = 32
#: At most this many unlabeled images join the UEO fit (drawn with the project's seed).
UEO_UNLABELED = 2000


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
    from ..callbacks import shot_schedule_epochs

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
        Classes, model, weights, fit mode, step budget and seed.
    """
    return {"classes": list(settings.classes), "model": settings.model,
            "pretrained": settings.pretrained, "fit_mode": settings.fit_mode,
            "train_steps": settings.train_steps, "seed": settings.seed}


def make_classifier(project, max_epochs=1, callbacks=None):
    """The project's :class:`~modal_vlm.ClipPromptClassifier` (unfitted: zero-shot).

    Parameters
    ----------
    project : Project
        Settings and the embedding cache directory.
    max_epochs : int, default=1
        Epochs of its next ``fit``.
    callbacks : list, optional
        skorch callbacks.

    Returns
    -------
    ClipPromptClassifier
        Seeded with the project's seed; embeddings cached in ``project.cache_dir``.
    """
    from .. import ClipPromptClassifier

    s = project.settings
    extra = {"fit_mode": "ueo", "train_visual_norm": False} if s.fit_mode == "ueo" else {}
    # The library's learner (it starts at the zero-shot prompt, so the first labels do not
    # make the model a person is labeling with worse), with the epochs the app allows.
    return ClipPromptClassifier(list(s.classes), model_name=s.model, pretrained=s.pretrained,
                                max_epochs=max_epochs, cache_dir=str(project.cache_dir), device=s.device,
                                random_state=s.seed, verbose=0, callbacks=callbacks, **extra)


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
                        "error": None}
        self._thread = None

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
            ``phase`` (``starting``, ``scanning``, ``encoding``, ``training``, ``querying``,
            ``saving``, ``ready``: a batch is open, ``done``: nothing left to label,
            ``error``), ``message``, progress ``done`` / ``total``, ``error`` (the failure,
            or None).
        """
        with self._lock:
            return dict(self._status)

    def _set(self, phase, message, done=0, total=0, error=None):
        with self._lock:
            self._status = {"phase": phase, "message": message, "done": done, "total": total,
                            "error": error}

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
            except Exception as exc:  # reported on the page; labeling goes on
                self._set("error", f"{type(exc).__name__}: {exc}", error=traceback.format_exc())
            with self._lock:
                if not self._wake.is_set():   # else a wake-up came during the step: go on
                    self._idle.set()
            self._wake.wait()

    def prepare(self) -> None:
        """Scan the folder, load the saved model and encode every image (steps 1 and 2).

        The thread does this first, and again when a file vanished or changed under it; an
        export without a server calls it directly. Embeddings come from the disk cache after
        the first time, so a repeat costs little more than reading the files.
        """
        settings = self.project.settings
        self._set("scanning", f"scanning {settings.images_dir}")
        root = self.project.root
        scan = scan_images(settings.images_dir, exclude=[root])
        self.store.sync_images(scan.found)
        self._load_model()
        self._encode_all()

    def _load_model(self):
        """``model.pkl`` if it was trained with the current settings; else it is retrained.

        The labels are the source of truth: a saved model that cannot be loaded (a file from
        another library version) is retrained from them, never fatal.
        """
        self._set("loading", f"loading {self.project.settings.model}")
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

    def _encode_all(self):
        images = self.store.images("ok")
        clf = self._current()
        total = len(images)
        self._set("encoding", f"encoding {total} images", 0, total)
        for start in range(0, total, ENCODE_CHUNK):
            chunk = images[start:start + ENCODE_CHUNK]
            try:
                clf.transform([self._path(image) for image in chunk])
            except (ValueError, OSError):
                for image in chunk:   # find the culprits; the others are encoded
                    try:
                        clf.transform([self._path(image)])
                    except (ValueError, OSError) as exc:   # the library names the file
                        self.store.mark_unreadable(image["id"], str(exc))
            self._set("encoding", f"encoding {total} images", min(start + ENCODE_CHUNK, total), total)

    def _step(self):
        open_batch = self.store.batch()
        if self._needs_training(open_batch):
            self._train()
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
        epochs = epochs_for(max(1, len(y) - n_ood), len(settings.classes), settings.train_steps, clf.batch_size)
        clf.set_params(max_epochs=epochs)
        self._set("training", message, 0, epochs)
        fit_params = {}
        if settings.fit_mode == "ueo":
            fit_params["X_unlabeled"] = self._ueo_unlabeled()
        started = time.perf_counter()
        clf.fit(np.array([self._path(row) for row in labeled]), np.asarray(y), **fit_params)
        seconds = time.perf_counter() - started
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
        """Readable images without a decision (skipped ones are set aside, not pooled)."""
        states = self.store.states()
        return [image for image in self.store.images("ok")
                if image["id"] not in states or states[image["id"]]["kind"] == "unlabel"]

    def _query(self):
        from modAL.models import ActiveLearner

        from ..strategies import get_strategy

        settings = self.project.settings
        pool = self._pool()
        if not pool:
            return None
        n = min(settings.images_per_batch, len(pool))
        self._set("querying", f"{settings.strategy} chooses {n} of {len(pool)} images")
        X_pool = np.array([self._path(image) for image in pool])
        n_batches = len(self.store.batches())
        labeled, y = self._labeled()
        with self._model_lock:
            clf = self._current()
            learner = ActiveLearner(estimator=clf, query_strategy=get_strategy(settings.strategy))
            if labeled:  # what PCB's class counts, Coreset's distances, open-set weights read; no refit
                learner.X_training = np.array([self._path(row) for row in labeled])
                learner.y_training = np.asarray(y)
            picked, _ = learner.query(X_pool, n_instances=n,
                                      random_state=round_seed(settings.seed, n_batches + 1))
            picked = np.asarray(picked, dtype=int).reshape(-1)
            proba = clf.predict_proba_from_features(clf.transform(X_pool[picked]))
        items = [(pool[i]["id"], settings.classes[int(p.argmax())], float(p.max()))
                 for i, p in zip(picked, proba)]
        round_ = self.model_info["round"] if self.model_info else 0
        batch_id = self.store.create_batch(items, strategy=settings.strategy, model_round=round_)
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
        """Class probabilities of every readable image under the current model.

        Returns
        -------
        images : list of dict
            The readable images (``id``, ``path``...).
        proba : ndarray of shape (n_images, n_classes)
            Their probabilities (zero-shot before the first training).
        """
        images = self.store.images("ok")
        with self._model_lock:
            clf = self._current()
            if not images:
                return images, np.zeros((0, len(self.project.settings.classes)), np.float32)
            return images, clf.predict_proba_from_features(
                clf.transform([self._path(image) for image in images]))


__all__ = ["LabelingWorker", "TrainingProgress", "epochs_for", "make_classifier", "model_key"]
