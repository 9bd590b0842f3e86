"""modal-vlm as a Label Studio ML backend: ``modal-vlm label-studio-backend``.

Label Studio's Community Edition has no active-learning loop. This server gives it one,
with the labeling app's core: the same project directory, label store, learner, strategy
and seed as ``modal-vlm label`` (one core, two front ends). It speaks the protocol of
``label-studio-ml-backend`` (``label_studio_ml/api.py``):

* ``GET /health`` (and ``/``): ``{"status": "UP", ...}``;
* ``POST /setup``: Label Studio connects a project; the labeling config is checked against
  the project's classes, the answer is the current ``model_version``;
* ``POST /predict``: one prediction per task: the model's class as a ``choices``
  pre-annotation (its confidence as the result's ``score``) and the strategy's
  **priority** as the prediction's ``score``;
* ``POST /webhook``: ``ANNOTATION_CREATED``, ``ANNOTATIONS_CREATED``,
  ``ANNOTATION_UPDATED``, ``ANNOTATION_DELETED`` / ``ANNOTATIONS_DELETED`` (what Label
  Studio sends) and ``START_TRAINING``.

An annotation is written to disk before the webhook is answered (``label-studio.sqlite``,
then the project's append-only label store), so killing the server at any moment loses
nothing Label Studio has sent. Training follows in the background, debounced: a burst of
annotations gives one retraining. After each retraining the worker ranks the unlabeled
images, bumps the model version and pushes one prediction per task to Label Studio
(:mod:`~modal_vlm.labeling.labelstudio_client`), so that sorting the Data Manager by
prediction score shows the strategy's next batch first: a batched active-learning loop in
the Community Edition. The push reuses the last task listing (until a task webhook, a
refused push or :data:`TASK_LIST_MAX_AGE`) and leaves the deletion of superseded versions
to a pause in the labeling (:data:`CLEANUP_AFTER`): both cost Label Studio more than the
push itself.

The priority of an unlabeled image is ``1 - rank / n_unlabeled``: the strategy's next batch
first, in the strategy's order (exactly the batch ``modal-vlm label`` would show, see
:meth:`LabelingSession.choose <modal_vlm.labeling.session.LabelingSession.choose>`), then
the other unlabeled images from the least to the most confident. Labeled and skipped
images get 0.

Images: a task's image is a Label Studio local-storage URL (``/data/local-files/?d=``,
read from disk below ``--document-root``), an upload or any other ``/data/...`` URL
(fetched from Label Studio with the API key into ``IMAGES_DIR/label-studio-files/``). Every
path must resolve inside the project's image folder; anything else is refused, as the app
refuses it.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import sqlite3
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from .._files import IMAGE_EXTENSIONS
from ..exceptions import ModalVLMError
from .commands import DEFAULT_BACKEND_PORT, DEFAULT_DEBOUNCE
from .labelstudio import OOD_CHOICE
from .scan import resolve_inside, scan_images
from .store import Decision
from .session import confidence
from .worker import BackgroundWorker

#: The backend's name in Label Studio, and the prefix of its model versions.
BACKEND_NAME = "modal-vlm"
#: However many annotations keep coming, retraining starts this many debounce periods after
#: the first one that waits.
MAX_DEBOUNCE_PERIODS = 5
#: Request bodies above this many bytes are refused (a /predict of thousands of tasks fits).
MAX_BACKEND_BODY = 32 * 1024 * 1024
#: Folder below the image folder where files fetched from Label Studio are kept.
DOWNLOADS = "label-studio-files"
#: Seconds a /predict waits for the first ranking (start-up: loading, encoding).
PREDICT_WAIT = 60.0
#: Seconds before a push that Label Studio refused (or that could not reach it) is retried.
PUSH_RETRY = 10.0
#: A push lists Label Studio's tasks again when its last listing is older than this, even
#: without a ``TASKS_CREATED`` / ``TASKS_DELETED`` webhook: listing the tasks is the largest
#: part of a push once deletions left it (``benchmarks/results/labelstudio_latency.md``).
TASK_LIST_MAX_AGE = 300.0
#: Superseded model versions' predictions are deleted once no annotation came for this many
#: seconds: deleting many predictions takes Label Studio tens of seconds on SQLite and holds
#: its database meanwhile, so this waits for a pause in the labeling instead of delaying the
#: next priorities (the Data Manager only shows the project's current version anyway).
CLEANUP_AFTER = 60.0
ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED")
DELETE_EVENTS = ("ANNOTATION_DELETED", "ANNOTATIONS_DELETED")
#: Webhook actions that change labels or ask for training; others are acknowledged only.
TRAIN_EVENTS = ANNOTATION_EVENTS + DELETE_EVENTS + ("START_TRAINING",)
#: New tasks (an import, a storage sync): their images are ranked and pushed.
TASK_EVENTS = ("TASKS_CREATED", "TASKS_DELETED")
LOCAL_FILES_PATH = "/data/local-files/"


class BackendError(ModalVLMError, ValueError):
    """A request the backend refuses: the message names the problem (answered as 4xx).

    Parameters
    ----------
    message : str
        What is wrong, for Label Studio's log and the user.
    status : int, default=422
        The HTTP status of the answer.
    """

    def __init__(self, message, status=422):
        super().__init__(message)
        self.status = status


# -- the labeling config -------------------------------------------------------------------


@dataclass(frozen=True)
class LabelConfig:
    """The part of a Label Studio labeling config the backend reads and writes.

    Parameters
    ----------
    from_name : str
        The ``<Choices>`` control's name.
    to_name : str
        The ``<Image>`` it labels.
    value_key : str
        The task data key of the image URL (``$image`` -> ``image``).
    choices : tuple of str
        The choice values.
    """

    from_name: str
    to_name: str
    value_key: str
    choices: tuple


def parse_label_config(xml: str, classes) -> LabelConfig:
    """Check a labeling config against the project's classes and find its image choice.

    Parameters
    ----------
    xml : str
        Label Studio's labeling config.
    classes : sequence of str
        The project's classes.

    Returns
    -------
    LabelConfig
        The first ``<Choices>`` that labels an ``<Image>``.

    Raises
    ------
    BackendError
        Not XML, no ``<Choices>`` on an ``<Image>``, a class without its choice, or a choice
        that is neither a class nor ``"none of these classes"``.

    Examples
    --------
    >>> from modal_vlm.labeling.labelstudio import label_studio_config
    >>> parse_label_config(label_studio_config(["cat", "dog"]), ["cat", "dog"]).choices
    ('cat', 'dog', 'none of these classes')
    """
    if not isinstance(xml, str) or not xml.strip():
        raise BackendError("no labeling config: Label Studio sends it with /setup and /predict")
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise BackendError(f"the labeling config is not valid XML: {exc}") from None
    images = {el.get("name"): el.get("value", "") for el in root.iter("Image") if el.get("name")}
    for control in root.iter("Choices"):
        if control.get("toName") in images and control.get("name"):
            choices = tuple(c.get("value") for c in control.iter("Choice") if c.get("value") is not None)
            break
    else:
        raise BackendError("the labeling config needs an <Image name=... value=\"$...\"/> and a "
                           "<Choices name=... toName=...> on it (modal-vlm label export --what "
                           "label-studio-config writes one)")
    missing = [name for name in classes if name not in choices]
    extra = [name for name in choices if name not in classes and name != OOD_CHOICE]
    if missing or extra:
        raise BackendError(f"the labeling config's choices {list(choices)} do not match the project's "
                           f"classes {list(classes)} (plus optional {OOD_CHOICE!r}): "
                           + "; ".join(filter(None, [missing and f"missing {missing}",
                                                     extra and f"unknown {extra}"])))
    value = images[control.get("toName")]
    if not value.startswith("$") or len(value) < 2:
        raise BackendError(f"the <Image> value must name a task field such as \"$image\", got {value!r}")
    return LabelConfig(control.get("name"), control.get("toName"), value[1:], choices)


def annotation_decision(annotation: dict, config: LabelConfig):
    """The label decision of one Label Studio annotation, or None when it holds no choice.

    Parameters
    ----------
    annotation : dict
        As Label Studio sends it (``result``, ``was_cancelled``).
    config : LabelConfig
        The project's labeling config.

    Returns
    -------
    Decision or None
        ``skip`` for a skipped (cancelled) annotation, ``ood`` for "none of these classes",
        ``class`` otherwise.

    Raises
    ------
    BackendError
        Several choices, or a choice that is not in the config.

    Examples
    --------
    >>> config = LabelConfig("label", "image", "image", ("cat", "dog"))
    >>> annotation_decision({"result": [{"from_name": "label", "type": "choices",
    ...                                  "value": {"choices": ["dog"]}}]}, config)
    Decision(kind='class', label='dog')
    """
    if annotation.get("was_cancelled"):
        return Decision("skip")
    result = annotation.get("result") or []
    if not isinstance(result, list):
        raise BackendError(f"annotation {annotation.get('id')}: 'result' must be a list")
    chosen = []
    for item in result:
        if isinstance(item, dict) and item.get("from_name") == config.from_name:
            values = (item.get("value") or {}).get("choices") or []
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise BackendError(f"annotation {annotation.get('id')}: choices must be a list of strings")
            chosen.extend(values)
    if len(chosen) > 1:
        raise BackendError(f"annotation {annotation.get('id')}: {len(chosen)} choices {chosen}; one per image")
    if not chosen:
        return None
    if chosen[0] == OOD_CHOICE:
        return Decision("ood")
    if chosen[0] not in config.choices:
        raise BackendError(f"annotation {annotation.get('id')}: {chosen[0]!r} is not a choice of the config")
    return Decision("class", chosen[0])


# -- the backend's own state ---------------------------------------------------------------

STATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    task_id INTEGER PRIMARY KEY,          -- Label Studio's task id
    url TEXT,                             -- its image URL
    image_id INTEGER,                     -- the image of the label store; NULL: not resolved
    problem TEXT,                         -- why it cannot be resolved
    pushed_version TEXT                   -- the model version of its latest pushed prediction
);
CREATE TABLE IF NOT EXISTS annotations (
    annotation_id INTEGER PRIMARY KEY,    -- Label Studio's annotation id
    task_id INTEGER NOT NULL,
    kind TEXT,                            -- class, ood, skip; NULL: no choice
    label TEXT,
    deleted INTEGER NOT NULL DEFAULT 0,
    seq INTEGER NOT NULL,                 -- order of arrival: the latest decides
    applied INTEGER NOT NULL DEFAULT 0    -- 1: in the label store; 0: still to apply
);
"""


#: A task's image URL; a new URL forgets the image it resolved to.
TASK_URL = ("INSERT INTO tasks (task_id, url) VALUES (?, ?) ON CONFLICT(task_id) DO UPDATE SET "
            "image_id = CASE WHEN excluded.url IS NULL OR excluded.url IS url THEN image_id END, "
            "problem = CASE WHEN excluded.url IS NULL OR excluded.url IS url THEN problem END, "
            "url = COALESCE(excluded.url, url)")


class BackendState:
    """What the backend knows of Label Studio, in ``PROJECT/label-studio.sqlite``.

    Annotations as Label Studio sent them (their ids, so that a deletion, which carries only
    ids, can be applied), tasks and their images, the model version and what was pushed.
    Every write is its own transaction, in WAL mode with ``synchronous=FULL``, like the label
    store.

    Parameters
    ----------
    path : str or path-like
        The database file (created when absent).
    """

    def __init__(self, path):
        self.path = str(path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(STATE_SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def _write(self, sql, params=()):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if isinstance(params, list):
                    self._db.executemany(sql, params)
                else:
                    self._db.execute(sql, params)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql, params=()) -> list[dict]:
        with self._lock:
            return [dict(row) for row in self._db.execute(sql, params)]

    def get(self, key, default=None):
        """A meta value.

        Parameters
        ----------
        key : str
            Its name (``ls_project``, ``label_config``, ``version``, ``pushed_version``...).
        default : object, optional
            Returned when it is not set.

        Returns
        -------
        object
            The JSON-decoded value.
        """
        rows = self._rows("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(rows[0]["value"]) if rows else default

    def set(self, key, value) -> None:
        """Store a meta value.

        Parameters
        ----------
        key : str
            Its name.
        value : object
            Anything JSON can encode.
        """
        self._write("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, json.dumps(value)))

    def record_annotations(self, rows) -> None:
        """Store annotations (created or updated), all in one transaction, to apply.

        Parameters
        ----------
        rows : list of (annotation_id, task_id, url, Decision or None)
            The annotations; ``url`` is the task's image URL.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM annotations").fetchone()[0]
                for annotation_id, task_id, url, decision in rows:
                    seq += 1
                    self._db.execute(TASK_URL, (task_id, url))
                    self._db.execute(
                        "INSERT INTO annotations (annotation_id, task_id, kind, label, seq) VALUES (?, ?, ?, ?, ?) "
                        "ON CONFLICT(annotation_id) DO UPDATE SET task_id = excluded.task_id, kind = excluded.kind, "
                        "label = excluded.label, deleted = 0, seq = excluded.seq, applied = 0",
                        (annotation_id, task_id, decision and decision.kind, decision and decision.label, seq))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def delete_annotations(self, ids) -> int:
        """Mark annotations deleted, to apply; unknown ids are ignored.

        Parameters
        ----------
        ids : iterable of int
            Label Studio's annotation ids.

        Returns
        -------
        int
            How many were known.
        """
        ids = [int(i) for i in ids]
        known = self._rows(f"SELECT annotation_id FROM annotations WHERE annotation_id IN "
                           f"({','.join('?' * len(ids))})", ids) if ids else []
        self._write("UPDATE annotations SET deleted = 1, applied = 0 WHERE annotation_id = ?",
                    [(row["annotation_id"],) for row in known])
        return len(known)

    def pending(self) -> list[dict]:
        """Annotations not yet applied to the label store, with their task's image.

        Returns
        -------
        list of dict
            Annotation rows plus ``image_id``, ``url`` and ``problem`` of their task, in order
            of arrival.
        """
        return self._rows("SELECT a.*, t.image_id, t.url, t.problem FROM annotations a "
                          "JOIN tasks t ON t.task_id = a.task_id WHERE a.applied = 0 ORDER BY a.seq")

    def mark_applied(self, ids, applied=1) -> None:
        """Mark annotations as applied or set aside.

        Parameters
        ----------
        ids : iterable of int
            Annotation ids.
        applied : {1, 2}, default=1
            1: in the label store; 2: its image cannot be resolved.
        """
        self._write("UPDATE annotations SET applied = ? WHERE annotation_id = ?",
                    [(applied, int(i)) for i in ids])

    def latest_decision(self, image_id):
        """The decision of the image's latest annotation that holds one, over all its tasks.

        Parameters
        ----------
        image_id : int
            An image of the label store.

        Returns
        -------
        Decision or None
            None when no annotation (not deleted) decides it.
        """
        rows = self._rows("SELECT a.kind, a.label FROM annotations a JOIN tasks t ON t.task_id = a.task_id "
                          "WHERE t.image_id = ? AND a.deleted = 0 AND a.kind IS NOT NULL "
                          "ORDER BY a.seq DESC LIMIT 1", (int(image_id),))
        return Decision(rows[0]["kind"], rows[0]["label"]) if rows else None

    def tasks(self) -> dict:
        """The tasks the backend has met.

        Returns
        -------
        dict
            Task id -> row (``url``, ``image_id``, ``problem``, ``pushed_version``).
        """
        return {row["task_id"]: row for row in self._rows("SELECT * FROM tasks")}

    def set_tasks(self, rows) -> None:
        """Store where tasks' images are (or why they cannot be read), in one transaction.

        Parameters
        ----------
        rows : list of (task_id, url, image_id or None, problem or None)
            One row per task.
        """
        self._write("INSERT INTO tasks (task_id, url, image_id, problem) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(task_id) DO UPDATE SET url = excluded.url, image_id = excluded.image_id, "
                    "problem = excluded.problem",
                    [(int(task_id), url, image_id, problem) for task_id, url, image_id, problem in rows])

    def mark_pushed(self, task_ids, version) -> None:
        """Record that tasks have a prediction of ``version`` in Label Studio.

        Parameters
        ----------
        task_ids : iterable of int
            The tasks.
        version : str
            The model version.
        """
        self._write("UPDATE tasks SET pushed_version = ? WHERE task_id = ?",
                    [(version, int(task_id)) for task_id in task_ids])

    def counts(self) -> dict:
        """Annotations and tasks known, and what could not be applied or resolved.

        Returns
        -------
        dict
            ``annotations`` (not deleted), ``pending``, ``unresolvable``, ``tasks`` and
            ``tasks_refused``.
        """
        one = self._rows(
            "SELECT (SELECT COUNT(*) FROM annotations WHERE deleted = 0) AS annotations, "
            "(SELECT COUNT(*) FROM annotations WHERE applied = 0) AS pending, "
            "(SELECT COUNT(*) FROM annotations WHERE applied = 2) AS unresolvable, "
            "(SELECT COUNT(*) FROM tasks) AS tasks, "
            "(SELECT COUNT(*) FROM tasks WHERE problem IS NOT NULL) AS tasks_refused")[0]
        return one


# -- task images ---------------------------------------------------------------------------


class TaskImages:
    """Where the image of a Label Studio task is, as an image of the label store.

    Parameters
    ----------
    project : Project
        The project (its image folder is the only place images are read from).
    store : LabelStore
        Its label store.
    client : LabelStudioClient, optional
        Fetches ``/data/...`` files that are not on disk.
    document_root : str or path-like, optional
        Label Studio's ``LOCAL_FILES_DOCUMENT_ROOT`` as seen from here: local-storage paths
        (``?d=...``) are relative to it. Without it they are matched against the image
        folder's paths (exactly, or by a unique path suffix).
    """

    def __init__(self, project, store, client=None, document_root=None):
        self.project, self.store, self.client = project, store, client
        self.root = Path(project.settings.images_dir).resolve()
        self.document_root = None if document_root is None else Path(document_root).resolve()
        self._lock = threading.Lock()
        self._paths = None                     # relative path -> image id, refreshed by scans
        self.new_images = threading.Event()   # set when a scan found new files

    def _known(self) -> dict:
        if self._paths is None:
            self._paths = {row["path"]: row["id"] for row in self.store.images()}
        return self._paths

    def image_id(self, task: dict, value_key: str) -> int:
        """The store's image id of a task's image (fetched and scanned in if needed).

        Parameters
        ----------
        task : dict
            A Label Studio task (``id``, ``data``).
        value_key : str
            The data field of the image URL.

        Returns
        -------
        int
            The image id.

        Raises
        ------
        BackendError
            No URL, an unsupported URL, a path outside the image folder, a file that is not
            an image, or a fetch that failed; the message names the task and the URL.
        """
        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        url = data.get(value_key)
        where = f"task {task.get('id')}"
        if not isinstance(url, str) or not url:
            raise BackendError(f"{where} has no image URL in data[{value_key!r}]")
        paths = self._known()
        exported = data.get("modal_vlm_path")   # tasks written by `modal-vlm label export`
        if isinstance(exported, str) and exported in paths:
            return paths[exported]
        source, relative = self._locate(url, where, paths)
        if relative in paths:
            return paths[relative]
        with self._lock:
            target = self.root / relative
            if not target.is_file() and source is not None:
                self._fetch(source, target, where)
            return self._scan_in(relative, where)

    def _locate(self, url, where, paths):
        """``(path to fetch from Label Studio or None, path relative to the image folder)``."""
        if "\x00" in url:
            raise BackendError(f"{where}: invalid image URL")
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme or parsed.netloc:
            if self.client is None or not self.client.same_origin(url):
                raise BackendError(f"{where}: {url!r} is not a file of Label Studio "
                                   f"({'no --label-studio-url given' if self.client is None else self.client.url}); "
                                   "only local storage and Label Studio's /data/ files are read")
        path = parsed.path
        if not path.startswith("/data/") or "/../" in path + "/" or "\\" in path:
            raise BackendError(f"{where}: unsupported image URL {url!r}; use Label Studio's local storage "
                               "(/data/local-files/?d=...) or uploads (/data/upload/...)")
        fetch = path + (f"?{parsed.query}" if parsed.query else "")
        if path == LOCAL_FILES_PATH or path == LOCAL_FILES_PATH.rstrip("/"):
            found = urllib.parse.parse_qs(parsed.query).get("d")
            if not found or not found[0]:
                raise BackendError(f"{where}: local-files URL {url!r} without ?d=")
            relative = self._inside(found[0], where, url, local=True)
            if self.document_root is not None:
                fetch = None   # its files are on this disk: a missing one is missing
            elif relative not in paths:
                suffix = [p for p in paths if ("/" + found[0].lstrip("/")).endswith("/" + p)]
                if len(suffix) == 1:
                    relative = suffix[0]
        else:   # an upload or another /data/ file: kept below label-studio-files/
            relative = self._inside(f"{DOWNLOADS}/{urllib.parse.unquote(path[len('/data/'):])}", where, url)
        return (fetch if self.client is not None else None), relative

    def _inside(self, path, where, url, local=False) -> str:
        """``path`` as a path relative to the image folder, refused when it leads out."""
        path = path.replace("\\", "/")
        if "\x00" in path or any(part in (".", "..") for part in path.split("/")):
            raise BackendError(f"{where}: {url!r}: '.', '..' and NUL are not allowed in image paths")
        if local and self.document_root is not None:
            target = (self.document_root / path.lstrip("/")).resolve()
        else:
            target = (self.root / path.lstrip("/")).resolve()
        if not target.is_relative_to(self.root) or target == self.root:
            raise BackendError(f"{where}: {url!r} lies outside the image folder {self.root}")
        if target.suffix.lower() not in IMAGE_EXTENSIONS:
            raise BackendError(f"{where}: {url!r} is not an image file ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        return target.relative_to(self.root).as_posix()

    def _fetch(self, source, target: Path, where) -> None:
        from PIL import Image, UnidentifiedImageError

        from .._files import write_atomic
        from .labelstudio_client import LabelStudioError

        try:
            content = self.client.download(source)
        except LabelStudioError as exc:
            raise BackendError(f"{where}: {exc}", status=502) from None
        try:
            with Image.open(io.BytesIO(content)) as image:
                image.size
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise BackendError(f"{where}: {source} is not an image: {exc}") from None
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.parent.resolve().is_relative_to(self.root):   # a link planted on the way
            raise BackendError(f"{where}: {source} would be written outside the image folder")
        write_atomic(target, content)

    def _scan_in(self, relative, where) -> int:
        """Rescan the folder (a file Label Studio knows, which the last scan did not see)."""
        if resolve_inside(self.root, relative) is None:
            raise BackendError(f"{where}: {relative} is not a file inside the image folder {self.root}"
                               + ("" if self.client else " (give --label-studio-url and --api-key to fetch it)"),
                               status=404)
        scan = scan_images(self.root, exclude=[self.project.root])
        self.store.sync_images(scan.found)
        self.new_images.set()
        rows = self.store.images()
        self._paths = {row["path"]: row["id"] for row in rows}
        for row in rows:
            if row["path"] == relative:
                if row["status"] != "ok":
                    raise BackendError(f"{where}: {relative} is {row['status']}: {row['reason']}")
                return row["id"]
        raise BackendError(f"{where}: {relative} is not an image of the folder", status=404)


# -- the worker ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Ranking:
    """The priorities of one model version.

    Parameters
    ----------
    version : str
        The model version.
    priority : dict
        Image id -> priority in [0, 1] (0: labeled or skipped).
    proba : dict
        Image id -> class probabilities (every readable image).
    next_batch : tuple of int
        The strategy's next batch (image ids, in its order): the highest priorities.
    """

    version: str
    priority: dict
    proba: dict
    next_batch: tuple


class LabelStudioWorker(BackgroundWorker):
    """The labeling worker, for Label Studio: apply annotations, retrain (debounced), rank
    the unlabeled images, push the priorities.

    The thread is :class:`~modal_vlm.labeling.worker.BackgroundWorker`'s; the scan, the
    encoding, the training, the strategy's choice and the saved model are its
    :class:`~modal_vlm.labeling.session.LabelingSession`'s; what differs is the step
    that follows a wake-up (no batch: a ranking of every unlabeled image, pushed to Label
    Studio) and that a round is a retraining.

    Parameters
    ----------
    project : Project
        The project.
    store : LabelStore
        Its labels.
    state : BackendState
        The backend's state.
    images : TaskImages
        Resolves task images.
    client : LabelStudioClient, optional
        Pushes priorities; without it, predictions are only given on request (/predict).
    debounce : float, default=DEFAULT_DEBOUNCE
        Seconds without a new annotation before retraining.
    cleanup_after : float, default=CLEANUP_AFTER
        Seconds without a new annotation before superseded model versions' predictions are
        deleted in Label Studio.
    """

    def __init__(self, project, store, state, images, client=None, debounce=DEFAULT_DEBOUNCE,
                 cleanup_after=CLEANUP_AFTER):
        super().__init__(project, store)
        self.state, self.images, self.client, self.debounce = state, images, client, float(debounce)
        self.cleanup_after = float(cleanup_after)
        self.ranking = None
        self.last_push = None
        self.ranked = threading.Event()      # the first ranking is there
        self._timer, self._first_pending = None, None
        self._timer_lock = threading.Lock()
        self._last_activity = time.monotonic()
        self._cleanup_timer = None

    # -- scheduling -----------------------------------------------------------------------

    def schedule(self, delay=None) -> None:
        """Wake the worker once nothing new arrived for ``delay`` seconds (the debounce).

        Parameters
        ----------
        delay : float, optional
            Default: the worker's ``debounce``; 0 wakes it now.
        """
        delay = self.debounce if delay is None else float(delay)
        with self._timer_lock:
            now = self._last_activity = time.monotonic()
            if self._timer is not None:
                self._timer.cancel()
            if self._first_pending is None:
                self._first_pending = now
            deadline = min(now + delay, self._first_pending + MAX_DEBOUNCE_PERIODS * max(delay, 1e-3))
            self._timer = threading.Timer(max(0.0, deadline - now), self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self):
        with self._timer_lock:   # woken before the timer is cleared: wait_idle never sees neither
            self.wake()
            self._first_pending, self._timer = None, None

    def wait_idle(self, timeout=60.0) -> dict:
        """Block until no retraining waits for its debounce and the worker is idle.

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
            Still busy after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._timer_lock:
                waiting = self._timer is not None
            if not waiting:
                status = super().wait_idle(max(0.0, deadline - time.monotonic()))
                with self._timer_lock:
                    if self._timer is None:
                        return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Label Studio worker is still busy after {timeout} s: {self.status()}")
            time.sleep(0.05)

    def stop(self, timeout=None) -> None:
        """Cancel a waiting retraining and stop the thread after its current step.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for the thread.
        """
        with self._timer_lock:
            for timer in (self._timer, self._cleanup_timer):
                if timer is not None:
                    timer.cancel()
        super().stop(timeout)

    @property
    def model_version(self) -> str:
        """The model version Label Studio sees: ``modal-vlm-vN``, bumped by every new ranking."""
        return f"{BACKEND_NAME}-v{self.state.get('version', 0)}"

    # -- the step -------------------------------------------------------------------------

    #: Label Studio sorts all of its tasks by the priorities pushed to it, so the backend ranks
    #: the whole folder: unlike the label page, it cannot start from the first images encoded.
    encode_all = True

    def _step(self):
        self.apply_pending()
        if self.session.needs_training():
            self._train()
        if self.images.new_images.is_set():
            self.images.new_images.clear()
            self.session.prepare(encode_all=True)   # the new files join the store and the pool, encoded
        self._rank()
        self.session.save()
        from .labelstudio_client import LabelStudioError

        try:
            self._push()
        except LabelStudioError as exc:   # Label Studio down or refusing: try again later
            self._set("error", f"cannot push {self.model_version} to Label Studio (retrying in "
                               f"{PUSH_RETRY:.0f} s): {exc}", error=str(exc))
            self.schedule(PUSH_RETRY)
            return
        if self.images.new_images.is_set():   # the push met tasks of new images: rank them too
            self.schedule(0)
        counts = self.store.counts(self.project.settings.classes)
        ready = f"{self.model_version}: {sum(counts['per_class'].values())} labels, {counts['unlabeled']} images ranked"
        self._set("ready", ready)
        self._clean_up(ready)

    def _clean_up(self, ready) -> None:
        """Delete the predictions of superseded model versions once the labeling paused for
        ``cleanup_after`` seconds (the step is woken then); until then, wait."""
        from .labelstudio_client import LabelStudioError

        stale, project_id = self.state.get("stale_versions", []), self.state.get("ls_project")
        if not stale or self.client is None or project_id is None:
            return
        quiet = time.monotonic() - self._last_activity
        if quiet < self.cleanup_after:
            with self._timer_lock:
                if self._cleanup_timer is not None:
                    self._cleanup_timer.cancel()
                self._cleanup_timer = threading.Timer(self.cleanup_after - quiet, self.wake)
                self._cleanup_timer.daemon = True
                self._cleanup_timer.start()
            return
        for version in stale:
            self._set("cleaning", f"deleting the predictions of {version} (superseded) in Label Studio")
            try:
                self.client.delete_model_version(project_id, version)
            except LabelStudioError:   # Label Studio down: the next pause tries again
                break
            self.state.set("stale_versions", [v for v in self.state.get("stale_versions", []) if v != version])
        self._set("ready", ready)

    def _train(self):
        # A round is a retraining here: the model version and the query's seed follow it.
        previous = (self.session.model_info or self.project.model_info() or {}).get("round", 0)
        self.session.train(round_=previous + 1)

    def apply_pending(self) -> int:
        """Apply the annotations received (and not yet applied) to the label store.

        Each image gets the decision of its latest annotation (``unlabel`` when its last one
        was deleted), as a new event when it differs from the image's current label.

        Returns
        -------
        int
            Label events appended.
        """
        pending = self.state.pending()
        if not pending:
            return 0
        config = self._config()
        tasks = self.state.tasks()
        classes = list(self.project.settings.classes)
        states = self.store.states()
        recorded, applied, refused = 0, [], []
        for row in pending:
            image_id = row["image_id"]
            if image_id is None:
                try:
                    image_id = self._task_image(row["task_id"], tasks[row["task_id"]]["url"], config)
                except BackendError:
                    refused.append(row["annotation_id"])
                    continue
            decision = self.state.latest_decision(image_id) or Decision("unlabel")
            current = states.get(image_id)
            if current is None and decision.kind == "unlabel":
                applied.append(row["annotation_id"])
                continue
            if current is None or (current["kind"], current["label"]) != (decision.kind, decision.label):
                self.store.record(image_id, decision, classes, source="import")
                states[image_id] = {"kind": decision.kind, "label": decision.label}
                recorded += 1
            applied.append(row["annotation_id"])
        self.state.mark_applied(applied)
        self.state.mark_applied(refused, applied=2)
        return recorded

    def _config(self):
        xml = self.state.get("label_config")
        return None if xml is None else parse_label_config(xml, self.project.settings.classes)

    def _task_image(self, task_id, url, config, remember=None) -> int:
        """Resolve a task's image; ``(task_id, url, image_id, problem)`` goes to ``remember``
        (a list, written at once by the caller), or to the state right away."""
        key = config.value_key if config is not None else "image"
        rows = [] if remember is None else remember
        try:
            image_id = self.images.image_id({"id": task_id, "data": {key: url}}, key)
        except BackendError as exc:
            rows.append((task_id, url, None, str(exc)))
            raise
        finally:
            if remember is None:
                self.state.set_tasks(rows)
        rows.append((task_id, url, image_id, None))
        return image_id

    def _rank(self) -> Ranking:
        settings = self.project.settings
        session = self.session
        images, proba = session.predict_all()
        pool = session.pool()
        round_ = session.model_info["round"] if session.model_info else 0
        trained = session.model_info["trained_through"] if session.model_info else 0
        self._set("querying", f"{settings.strategy} ranks {len(pool)} unlabeled images")
        order = []
        if pool:
            picked, _ = session.next_batch(pool, round_ + 1)
            row_of = {image["id"]: i for i, image in enumerate(images)}
            pool_confidence = confidence(proba[[row_of[image["id"]] for image in pool]])
            chosen = set(int(i) for i in picked)
            rest = sorted((i for i in range(len(pool)) if i not in chosen),
                          key=lambda i: (pool_confidence[i], pool[i]["id"]))
            order = [int(i) for i in picked] + rest
        priority = {image["id"]: 0.0 for image in images}
        priority.update({pool[i]["id"]: 1.0 - rank / len(pool) for rank, i in enumerate(order)})
        key = hashlib.sha256(json.dumps([round_, trained, [pool[i]["id"] for i in order], settings.strategy,
                                         settings.images_per_batch]).encode()).hexdigest()
        if self.state.get("ranking_key") != key:   # a new ranking: a new model version
            self.state.set("version", self.state.get("version", 0) + 1)
            self.state.set("ranking_key", key)
        n_next = min(settings.images_per_batch, len(order))
        self.ranking = Ranking(self.model_version, priority,
                               {image["id"]: p for image, p in zip(images, proba)},
                               tuple(pool[i]["id"] for i in order[:n_next]))
        self.ranked.set()
        return self.ranking

    def prediction(self, task_id, image_id, config, ranking=None) -> dict:
        """The Label Studio prediction of one task: class, confidence and priority.

        Parameters
        ----------
        task_id : int or None
            The task (None: the task id is not part of the answer, as in /predict).
        image_id : int
            Its image.
        config : LabelConfig
            Names of the control and the image.
        ranking : Ranking, optional
            Default: the current one.

        Returns
        -------
        dict
            ``result`` (one ``choices`` item whose ``score`` is the confidence), ``score``
            (the priority) and ``model_version``.
        """
        ranking = ranking or self.ranking
        p = ranking.proba.get(image_id)
        if p is None:   # an image the ranking has not seen yet
            p = self.session.predict_one(image_id)
        classes = self.project.settings.classes
        result = [{"from_name": config.from_name, "to_name": config.to_name, "type": "choices",
                   "value": {"choices": [classes[int(np.argmax(p))]]},
                   "score": round(float(confidence(p[None])[0]), 6)}]
        prediction = {"result": result, "score": round(float(ranking.priority.get(image_id, 0.0)), 6),
                      "model_version": ranking.version}
        return prediction if task_id is None else {"task": int(task_id), **prediction}

    def forget_task_list(self) -> None:
        """Make the next push list Label Studio's tasks (a webhook said they changed)."""
        self.state.set("tasks_listed", None)

    def _tasks(self, project_id, config, known, relist=False):
        """``([(task id, image url)...], listed)``: the tasks of the last listing while it is
        younger than :data:`TASK_LIST_MAX_AGE` and no webhook said tasks changed (their urls
        from ``known``, the state's tasks), else (or with ``relist``) Label Studio's list,
        fetched now (``listed`` True)."""
        listing = self.state.get("tasks_listed")
        if not relist and listing and time.time() - listing["at"] < TASK_LIST_MAX_AGE:
            return [(task_id, known[task_id]["url"]) for task_id in listing["ids"] if task_id in known], False
        tasks = self.client.tasks(project_id)
        return [(task["id"], (task.get("data") or {}).get(config.value_key)) for task in tasks], True

    def _push(self) -> None:
        """Send one prediction per task of this ranking to Label Studio (see the module
        docstring); a push cut short is redone from the start after a restart."""
        from .labelstudio_client import LabelStudioError

        project_id, config, ranking = self.state.get("ls_project"), self._config(), self.ranking
        if self.client is None or project_id is None or config is None or ranking is None:
            return
        version, pushed = ranking.version, self.state.get("pushed_version")
        started = time.perf_counter()
        self._set("pushing", f"sending {version}'s priorities to Label Studio")
        readable = {image["id"] for image in self.store.images("ok")}
        try:
            for relist in (False, True):
                known = self.state.tasks()
                tasks, listed = self._tasks(project_id, config, known, relist)
                predictions, refused, resolved = [], 0, []
                for task_id, url in tasks:
                    row = known.get(task_id)
                    if pushed == version and row is not None and row["pushed_version"] == version:
                        continue
                    try:
                        image_id = row["image_id"] if row and row["image_id"] is not None and row["url"] == url \
                            else self._task_image(task_id, url, config, remember=resolved)
                    except BackendError:
                        refused += 1
                        continue
                    if image_id in readable:
                        predictions.append(self.prediction(task_id, image_id, config, ranking))
                self.state.set_tasks(resolved)
                if listed:
                    self.state.set("tasks_listed", {"at": time.time(), "ids": [task_id for task_id, _ in tasks]})
                if pushed != version and self.state.get("pushing") == version:
                    self.client.delete_model_version(project_id, version)   # what a cut-short push left
                self.state.set("pushing", version)
                try:
                    self.client.import_predictions(project_id, predictions)
                    break
                except LabelStudioError:
                    if listed:
                        raise
                    # e.g. a task deleted without a webhook: list the tasks and push again
            if pushed != version and predictions:
                self.client.set_model_version(project_id, version)
                if pushed is not None:   # deleted when the labeling pauses (CLEANUP_AFTER)
                    self.state.set("stale_versions", self.state.get("stale_versions", []) + [pushed])
        except LabelStudioError as exc:
            self.last_push = {"version": version, "error": str(exc), "at": time.time()}
            raise
        self.state.mark_pushed([p["task"] for p in predictions], version)
        if predictions or pushed != version:
            self.state.set("pushed_version", version if predictions else pushed)
        self.last_push = {"version": version, "tasks": len(predictions), "refused": refused,
                          "seconds": round(time.perf_counter() - started, 3), "at": time.time()}


# -- the web app ---------------------------------------------------------------------------


class BasicAuth:
    """ASGI middleware: HTTP basic auth on every request (Label Studio's ML backend setting
    "Basic Authentication"); a wrong or missing password gets 401.

    Parameters
    ----------
    app : ASGI app
        The app behind it.
    user, password : str
        The credentials.
    """

    def __init__(self, app, user, password):
        self.app = app
        self.expected = base64.b64encode(f"{user}:{password}".encode()).decode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, credentials = given.partition(" ")
        if scheme.lower() != "basic" or not hmac.compare_digest(credentials.strip().encode(),
                                                                self.expected.encode()):
            body = b'{"detail": "authentication required"}'
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()),
                                    (b"www-authenticate", b'Basic realm="modal-vlm"')]})
            await send({"type": "http.response.body", "body": body})
            return None
        return await self.app(scope, receive, send)


def _project_id(value, where):
    """Label Studio's project id from ``"ID.TIMESTAMP"`` (/setup, /predict) or an int."""
    text = str(value if not isinstance(value, dict) else value.get("id", ""))
    head = text.split(".", 1)[0]
    if not head.isdigit():
        raise BackendError(f"{where}: no Label Studio project id in {value!r}")
    return int(head)


def _objects(value, what) -> list:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, dict) for item in items):
        raise BackendError(f"expected {what} as an object or a list of objects")
    return items


def create_backend_app(project, store, worker, state, *, basic_auth=None, loopback_only=True):
    """The ASGI app of the ML backend (behind the labeling app's middlewares,
    :func:`~modal_vlm.labeling._middleware.guard`).

    Parameters
    ----------
    project : Project
        The project.
    store : LabelStore
        Its labels.
    worker : LabelStudioWorker
        Its worker (started).
    state : BackendState
        The backend's state.
    basic_auth : tuple of (str, str), optional
        Required credentials.
    loopback_only : bool, default=True
        Answer only requests addressed to a loopback host name.

    Returns
    -------
    ASGI app
        Ready for uvicorn or a test client.
    """
    from ._middleware import guard

    classes = list(project.settings.classes)
    app = FastAPI(title="modal-vlm Label Studio ML backend", docs_url=None, redoc_url=None, openapi_url=None)
    connect = threading.Lock()

    @app.exception_handler(BackendError)
    async def refused(request, exc):
        return JSONResponse({"status": "ERROR", "error": str(exc), "detail": str(exc)}, status_code=exc.status)

    async def body_of(request: Request) -> dict:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            raise BackendError("send JSON (Content-Type: application/json)", status=415)
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as exc:
            raise BackendError(f"malformed JSON: {exc}", status=400) from None
        if not isinstance(body, dict):
            raise BackendError("the body must be a JSON object", status=400)
        return body

    def connect_project(ls_project, xml=None):
        """Remember the Label Studio project (one per backend) and its config."""
        config = parse_label_config(xml, classes) if xml is not None else None
        with connect:
            known = state.get("ls_project")
            if known is not None and known != ls_project:
                raise BackendError(f"this backend serves Label Studio project {known}; start another "
                                   f"modal-vlm label-studio-backend (another --project) for project "
                                   f"{ls_project}", status=409)
            changed = known is None or (xml is not None and xml != state.get("label_config"))
            if known is None:
                state.set("ls_project", ls_project)
            if xml is not None and xml != state.get("label_config"):
                state.set("label_config", xml)
                state.set("tasks_listed", None)   # the image's key in a task may have changed
        if changed:
            worker.schedule(0)   # push the priorities to the project (first connection)
        return config or worker._config()

    def health():
        status = worker.status()
        return {"status": "UP", "model_class": BACKEND_NAME, "model_version": worker.model_version,
                "worker": {k: status[k] for k in ("phase", "message", "done", "total")},
                "error": status["error"] and status["message"],
                "label_studio_project": state.get("ls_project"), "last_push": worker.last_push,
                "state": state.counts()}

    app.get("/")(health)
    app.get("/health")(health)

    @app.get("/metrics")
    def metrics():
        return {}

    @app.post("/setup")
    async def setup(request: Request):
        body = await body_of(request)
        connect_project(_project_id(body.get("project"), "/setup"), body.get("schema"))
        return {"model_version": worker.model_version}

    @app.post("/predict")
    async def predict(request: Request):
        import anyio

        body = await body_of(request)
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise BackendError("'tasks' must be a list of tasks")
        project_value = body.get("project")
        config = connect_project(_project_id(project_value, "/predict"), body.get("label_config")) \
            if project_value is not None else worker._config()
        if config is None:
            raise BackendError("no labeling config: send 'label_config' or connect the project (/setup) first")
        return await anyio.to_thread.run_sync(predict_tasks, tasks, config)

    def predict_tasks(tasks, config):
        if not worker.ranked.wait(PREDICT_WAIT):
            status = worker.status()
            raise BackendError(f"not ready yet: {status['message']} ({status['done']}/{status['total']})",
                               status=503)
        ranking = worker.ranking
        results, resolved = [], []
        for task in tasks:   # every task is resolved before any answer: all or nothing
            image_id = worker.images.image_id(task, config.value_key)
            if isinstance(task.get("id"), int):
                resolved.append((task["id"], (task.get("data") or {}).get(config.value_key), image_id, None))
            results.append(worker.prediction(None, image_id, config, ranking))
        state.set_tasks(resolved)
        if worker.images.new_images.is_set():
            worker.schedule()
        return {"results": results, "model_version": ranking.version}

    @app.post("/webhook")
    async def webhook(request: Request):
        body = await body_of(request)
        action = body.get("action")
        if action not in TRAIN_EVENTS + TASK_EVENTS:
            return JSONResponse({"status": "Unknown event"}, status_code=200)
        config = connect_project(_project_id(body.get("project"), f"webhook {action}"),
                                 (body.get("project") or {}).get("label_config"))
        if action in TASK_EVENTS:
            worker.forget_task_list()
            worker.schedule()
            return JSONResponse({"status": "ok", "result": "ranking"}, status_code=201)
        if action == "START_TRAINING":
            worker.schedule(0)
            return JSONResponse({"status": "ok", "result": "training"}, status_code=201)
        if action in DELETE_EVENTS:
            found = body.get("annotations", body.get("annotation"))
            ids = [item.get("id") for item in _objects(found, "'annotations'")]
            if not all(isinstance(i, int) for i in ids):
                raise BackendError("annotation ids must be integers")
            known = state.delete_annotations(ids)
        else:
            if config is None:
                raise BackendError("no labeling config: connect the project first (/setup)")
            annotations = _objects(body.get("annotation"), "'annotation'")
            tasks = {task.get("id"): task for task in _objects(body.get("task"), "'task'")}
            rows = []
            for annotation in annotations:   # all checked before anything is written
                task_id = annotation.get("task")
                task_id = task_id.get("id") if isinstance(task_id, dict) else task_id
                if not isinstance(annotation.get("id"), int) or not isinstance(task_id, int):
                    raise BackendError("an annotation needs integer 'id' and 'task'")
                data = (tasks.get(task_id) or {}).get("data") or {}
                url = data.get(config.value_key)
                if url is None and task_id not in state.tasks():
                    raise BackendError(f"annotation {annotation['id']}: task {task_id} and its data are missing")
                rows.append((annotation["id"], task_id, url, annotation_decision(annotation, config)))
            state.record_annotations(rows)   # on disk before the answer: nothing sent is lost
            known = len(rows)
        worker.schedule()
        return JSONResponse({"status": "ok", "result": {"annotations": known}}, status_code=201)

    guarded = guard(app, loopback_only=loopback_only, max_body=MAX_BACKEND_BODY)
    return guarded if basic_auth is None else BasicAuth(guarded, *basic_auth)


def serve_backend(project, host="127.0.0.1", port=DEFAULT_BACKEND_PORT, *, label_studio_url=None,
                  api_key=None, document_root=None, basic_auth=None, debounce=DEFAULT_DEBOUNCE,
                  announce=print):
    """Run the ML backend until interrupted.

    Parameters
    ----------
    project : Project
        The project.
    host : str, default="127.0.0.1"
        Address to bind; any other than a loopback address requires ``basic_auth``.
    port : int, default=9090
        TCP port; 0 picks a free one.
    label_studio_url, api_key : str, optional
        Label Studio's address and an API key: needed to push priorities and to fetch
        ``/data/...`` files.
    document_root : str or path-like, optional
        Label Studio's ``LOCAL_FILES_DOCUMENT_ROOT``, as seen from here.
    basic_auth : tuple of (str, str), optional
        Credentials required on every request.
    debounce : float, default=1.0
        Seconds without a new annotation before retraining.
    announce : callable, default=print
        Receives the URL once the socket is bound.

    Raises
    ------
    ValueError
        A non-loopback ``host`` without ``basic_auth``, or only one of the URL and the key.
    OSError
        The port is taken or another server runs on the project.
    """
    import socket

    import uvicorn

    from .labelstudio_client import LabelStudioClient
    from .server import _listen, _lock_project, is_loopback
    from .store import LabelStore

    local = is_loopback(host)
    if not local and basic_auth is None:
        raise ValueError(f"--host {host} exposes the backend beyond this machine: give --basic-auth-user "
                         "and --basic-auth-pass (and the same in Label Studio's model settings)")
    if (label_studio_url is None) != (api_key is None):
        raise ValueError("give both --label-studio-url and --api-key (or neither: then the priorities are "
                         "not pushed and only local-storage images are read)")
    client = None if label_studio_url is None else LabelStudioClient(label_studio_url, api_key)
    lock = _lock_project(project)
    sock = _listen(host, port, lock)
    port = sock.getsockname()[1]
    store = LabelStore(project.database)
    state = BackendState(project.root / "label-studio.sqlite")
    images = TaskImages(project, store, client, document_root)
    worker = LabelStudioWorker(project, store, state, images, client, debounce).start()
    app = create_backend_app(project, store, worker, state, basic_auth=basic_auth, loopback_only=local)
    shown = host if local else socket.gethostname()
    announce(f"http://{f'[{shown}]' if ':' in shown else shown}:{port}")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    try:
        server.run(sockets=[sock])
    finally:
        worker.stop(timeout=1.0)
        if client is not None:
            client.close()
        state.close()
        store.close()
        lock.close()


__all__ = ["BackendError", "BackendState", "LabelConfig", "LabelStudioWorker", "Ranking", "TaskImages",
           "annotation_decision", "create_backend_app", "parse_label_config", "serve_backend"]
