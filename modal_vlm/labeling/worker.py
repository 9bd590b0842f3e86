"""The background worker: the labeling session's steps in a thread, while the page stays responsive.

One thread calls the :class:`~modal_vlm.labeling.session.LabelingSession` (scan, encode, train,
query, save: see :mod:`~modal_vlm.labeling.session`), first to prepare the project and then
after every wake-up; between wake-ups it encodes the rest of the folder, chunk by chunk, and a
finished batch (a wake-up) is served before the next chunk.

The worker then sleeps until :meth:`BackgroundWorker.wake` (a finished batch, an edit). A
failure is reported in :meth:`BackgroundWorker.status` and the worker waits for the next
wake-up: labels keep being recorded whatever the worker does. The status carries an estimate
of the time left until the next batch, from the speeds the session measured so far.
"""
from __future__ import annotations

import threading
import time
import traceback

from .session import LabelingSession


class BackgroundWorker:
    """Scan, encode, train and query in a background thread (see the module docstring).

    Parameters
    ----------
    project : Project
        The project.
    store : LabelStore
        Its label store.

    Attributes
    ----------
    session : LabelingSession
        The model work; the thread is its only caller while the worker runs (exports read
        it under its ``model_lock``).
    """

    #: Encode every image before the first step (True), or only the first pool.
    encode_all = False

    def __init__(self, project, store):
        self.project, self.store = project, store
        self.session = LabelingSession(project, store, report=self._set)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._lock = threading.Lock()         # guards _status and the wake/idle pair
        self._status = {"phase": "starting", "message": "starting", "done": 0, "total": 0,
                        "error": None, "seconds_left": None}
        self._thread = None
        self._phase_started = time.perf_counter()

    # -- control --------------------------------------------------------------------------

    def start(self) -> "BackgroundWorker":
        """Start the thread (once).

        Returns
        -------
        BackgroundWorker
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
        encoded, readable = self.session.progress()
        with self._lock:
            return {**self._status, "encoded": encoded, "readable": readable}

    def _set(self, phase, message, done=0, total=0, error=None):
        with self._lock:
            if phase != self._status["phase"]:
                self._phase_started = time.perf_counter()
            self._status = {"phase": phase, "message": message, "done": done, "total": total,
                            "error": error, "seconds_left": self._seconds_left(phase, done, total)}

    def _seconds_left(self, phase, done, total):
        """Seconds until the next batch, from the measured speeds (None without a measurement)."""
        speed = dict(self.session.speed)
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
                    self.session.prepare(encode_all=self.encode_all)
                    prepared = True
                try:
                    self._step()
                except (FileNotFoundError, ValueError):   # a file changed under us: rescan, retry
                    self.session.prepare(encode_all=self.encode_all)
                    self._step()
                self._encode_rest()
            except Exception as exc:  # reported on the page; labeling goes on
                self._set("error", f"{type(exc).__name__}: {exc}", error=traceback.format_exc())
            with self._lock:
                if not self._wake.is_set():   # else a wake-up came during the step: go on
                    self._idle.set()
            self._wake.wait()

    def _encode_rest(self):
        """The rest of the folder, until done or woken (a finished batch goes first)."""
        self.session.encode_rest(lambda: self._wake.is_set() or self._stop.is_set())

    def _step(self):
        """After a wake-up: retrain if the labels changed, score, open a batch if none is, save."""
        session = self.session
        open_batch = self.store.batch()
        if session.needs_training(open_batch):
            session.train()
        session.score()
        if open_batch is None:
            open_batch = session.query()   # on screen from here on
        session.save()
        if open_batch is None:
            self._set("done", "every readable image is labeled or skipped")
        else:
            self._set("ready", f"batch {open_batch['id']}: {len(open_batch['items'])} images")


__all__ = ["BackgroundWorker"]
