"""The label store: every image of the folder, every batch shown and every label decision,
in one SQLite database (standard library :mod:`sqlite3`).

Durability is the point of this module:

* the database runs in WAL mode with ``synchronous=FULL``, and every label is its own
  transaction, committed before the request that carries it is answered: killing the
  server loses at most the click in flight;
* label decisions are *events*, appended and never changed (triggers refuse ``UPDATE`` and
  ``DELETE`` on the ``events`` table): an edit on the review page is a new event, and the
  image's label is its latest event;
* the batch on screen is stored with the model's guesses, so a restart shows the same batch
  with the same pre-selected answers.

An image's state is the kind of its latest event: ``"class"`` (labeled with a class name),
``"ood"`` (none of the classes: out-of-distribution), ``"skip"`` (seen, not labeled) or
``"unlabel"`` / no event (unlabeled: back in the pool the strategy draws from).
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass

from ..exceptions import LabelConflict, UnknownImage

#: Kinds of label events. ``class`` carries a class name; the others carry none.
EVENT_KINDS = ("class", "ood", "skip", "unlabel")
#: Kinds that are labels (exported, counted); ``ood`` is kept apart from the classes.
LABEL_KINDS = ("class", "ood")
#: Where an event came from.
SOURCES = ("batch", "review", "import")
#: Image states of the scan: readable, unreadable (never queried, shown as such), missing.
IMAGE_STATUSES = ("ok", "unreadable", "missing")

SCHEMA_VERSION = 2
#: What moves an older store to :data:`SCHEMA_VERSION`, by the version it has; each step runs in
#: one transaction with the version's update, so a store is either migrated or untouched.
MIGRATIONS = {
    # 2: the margin scale of the model that scored each pair (NULL in older rows: scale 1).
    1: "ALTER TABLE batch_scores ADD COLUMN scale REAL",
}
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,                -- relative to the image folder, '/' separated
    status TEXT NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'unreadable', 'missing')),
    reason TEXT                               -- why it is unreadable
);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    strategy TEXT NOT NULL,
    model_round INTEGER NOT NULL,             -- trainings before this batch was chosen
    finished_at REAL,
    n_judged INTEGER,                         -- items labeled (class or ood) when it finished
    n_right INTEGER                           -- of those, labeled with the model's guess
);
CREATE TABLE IF NOT EXISTS batch_items (
    batch_id INTEGER NOT NULL REFERENCES batches(id),
    position INTEGER NOT NULL,
    image_id INTEGER NOT NULL REFERENCES images(id),
    guess TEXT NOT NULL,                      -- the model's class when the batch was chosen
    confidence REAL NOT NULL,
    PRIMARY KEY (batch_id, position),
    UNIQUE (batch_id, image_id)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id INTEGER NOT NULL REFERENCES images(id),
    kind TEXT NOT NULL CHECK (kind IN ('class', 'ood', 'skip', 'unlabel')),
    label TEXT,
    batch_id INTEGER REFERENCES batches(id),
    source TEXT NOT NULL CHECK (source IN ('batch', 'review', 'import')),
    created_at REAL NOT NULL,
    CHECK ((kind = 'class') = (label IS NOT NULL))
);
CREATE TABLE IF NOT EXISTS batch_scores (    -- the test-then-train pairs (modal_vlm.evaluation)
    batch_id INTEGER NOT NULL REFERENCES batches(id),
    image_id INTEGER NOT NULL REFERENCES images(id),
    audit INTEGER NOT NULL,                   -- drawn at random, not by the strategy (never shown)
    model_labels INTEGER NOT NULL,            -- labels the model that scored it was trained on
    proba TEXT NOT NULL,                      -- that model's probabilities (JSON), before the label
    temperature REAL,                         -- calibrated batch_items.confidence; NULL: not calibrated
    scale REAL,                               -- that model's margin scale (modal_vlm.evaluation); NULL: 1
    PRIMARY KEY (batch_id, image_id)
);
CREATE INDEX IF NOT EXISTS events_by_image ON events (image_id, id);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'label events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'label events are append-only'); END;
"""
#: The latest event of every image that has one.
LATEST = "SELECT * FROM events WHERE id IN (SELECT MAX(id) FROM events GROUP BY image_id)"


@dataclass(frozen=True)
class Decision:
    """One label decision to record: ``kind`` and, for ``"class"``, the class name.

    Parameters
    ----------
    kind : {"class", "ood", "skip", "unlabel"}
        What the person decided.
    label : str, optional
        The class name; required for ``"class"``, None otherwise.
    """

    kind: str
    label: str | None = None

    def check(self, class_names) -> None:
        """Raise ``ValueError`` unless this decision is valid for ``class_names``.

        Parameters
        ----------
        class_names : sequence of str
            The project's classes.
        """
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown label kind {self.kind!r}; use one of {list(EVENT_KINDS)}")
        if self.kind == "class":
            if self.label not in class_names:
                raise ValueError(f"unknown class {self.label!r}; the classes are {list(class_names)}")
        elif self.label is not None:
            raise ValueError(f"a {self.kind!r} decision carries no class (got {self.label!r})")


class LabelStore:
    """The project's SQLite database (see the module docstring).

    One connection, shared by the server's threads and the background worker under a lock;
    every write is one transaction. Other processes (``modal-vlm label export`` while the
    server runs) read and write the same file safely: SQLite locks it.

    Parameters
    ----------
    path : str or path-like
        The database file; created with its tables when absent.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> store = LabelStore(pathlib.Path(tempfile.mkdtemp()) / "labels.sqlite")
    >>> store.sync_images({"a.png": None, "b.png": "cannot decode"})
    {'added': 2, 'missing': 0, 'unreadable': 1}
    >>> batch = store.create_batch([(1, "cat", 0.7)], strategy="cec", model_round=0)
    >>> store.record(1, Decision("class", "dog"), ["cat", "dog"], batch_id=batch)
    True
    >>> store.labels()[0]["label"], store.batches()[0]["n_right"]
    ('dog', 0)
    """

    def __init__(self, path):
        self.path = str(path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                   timeout=30.0)
        self._db.row_factory = sqlite3.Row
        try:
            # Read before anything is written: a damaged file is refused as it is.
            self._db.execute("PRAGMA schema_version").fetchone()
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")   # a committed label survives a power cut
            self._db.execute("PRAGMA foreign_keys=ON")
            if self._db.execute("PRAGMA quick_check(1)").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("the integrity check failed")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ValueError(
                f"{self.path} is damaged ({exc}): the labels cannot be read, and nothing was changed. "
                f"Keep a copy of the file; 'sqlite3 {self.path} .recover > labels.sql' rescues what is "
                f"readable, or restore a backup (exports: 'modal-vlm label export --what labels --format "
                f"json' of a readable copy)."
            ) from None
        version = self._scalar("SELECT value FROM meta WHERE key = 'schema_version'")
        if version is None:
            self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif not min(MIGRATIONS) <= int(version) <= SCHEMA_VERSION:
            self._db.close()
            raise ValueError(f"{self.path} has label-store schema {version}; this modal-vlm reads "
                             f"schemas {min(MIGRATIONS)} to {SCHEMA_VERSION}")
        else:
            for step in range(int(version), SCHEMA_VERSION):
                with self._transaction() as db:
                    db.execute(MIGRATIONS[step])
                    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(step + 1),))

    # -- plumbing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql, params=()) -> list[dict]:
        with self._lock:
            return [dict(row) for row in self._db.execute(sql, params)]

    def _scalar(self, sql, params=()):
        with self._lock:
            row = self._db.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def close(self) -> None:
        """Close the connection (every committed label is on disk already)."""
        with self._lock:
            self._db.close()

    # -- images ---------------------------------------------------------------------------

    def sync_images(self, found) -> dict:
        """Bring the image table in line with a scan of the folder.

        New files are added, files gone from the folder become ``"missing"`` (their labels
        stay), and every file found is ``"ok"`` or ``"unreadable"`` as the scan says.

        Parameters
        ----------
        found : dict
            Relative path -> None (readable) or the reason it is unreadable.

        Returns
        -------
        dict
            ``added``, ``missing`` and ``unreadable``: counts after the sync.
        """
        with self._transaction() as db:
            known = {row["path"] for row in db.execute("SELECT path FROM images")}
            db.executemany("INSERT INTO images (path) VALUES (?)",
                           [(path,) for path in sorted(found) if path not in known])
            db.executemany("UPDATE images SET status = ?, reason = ? WHERE path = ?",
                           [("ok" if reason is None else "unreadable", reason, path)
                            for path, reason in found.items()])
            db.executemany("UPDATE images SET status = 'missing', reason = NULL WHERE path = ?",
                           [(path,) for path in known - set(found)])
            counts = dict(db.execute("SELECT status, COUNT(*) FROM images GROUP BY status").fetchall())
        return {"added": len(set(found) - known), "missing": counts.get("missing", 0),
                "unreadable": counts.get("unreadable", 0)}

    def mark_unreadable(self, image_id: int, reason: str) -> None:
        """Set an image aside as unreadable (it is never queried and shown as such).

        Parameters
        ----------
        image_id : int
            The image.
        reason : str
            What failed, shown to the user.
        """
        with self._transaction() as db:
            db.execute("UPDATE images SET status = 'unreadable', reason = ? WHERE id = ?",
                       (reason, image_id))

    def images(self, status=None) -> list[dict]:
        """Images of the project in id order: ``id``, ``path``, ``status``, ``reason``.

        Parameters
        ----------
        status : str, optional
            Only images with this status (``"ok"``, ``"unreadable"``, ``"missing"``).

        Returns
        -------
        list of dict
            One row per image.
        """
        if status is None:
            return self._rows("SELECT * FROM images ORDER BY id")
        return self._rows("SELECT * FROM images WHERE status = ? ORDER BY id", (status,))

    def image(self, image_id) -> dict:
        """One image's row.

        Parameters
        ----------
        image_id : int
            The image.

        Returns
        -------
        dict
            ``id``, ``path``, ``status``, ``reason``.

        Raises
        ------
        UnknownImage
            No image has this id.
        """
        rows = self._rows("SELECT * FROM images WHERE id = ?", (int(image_id),))
        if not rows:
            raise UnknownImage(f"no image with id {image_id}")
        return rows[0]

    # -- label events ---------------------------------------------------------------------

    def record(self, image_id: int, decision: Decision, class_names, *, batch_id=None,
               source="batch", seen_event=None) -> bool:
        """Append one label event, in its own transaction.

        A decision on an image of the open batch made elsewhere (the review page) counts
        for that batch: the label page shows it as decided, and it may finish the batch.

        Parameters
        ----------
        image_id : int
            The image.
        decision : Decision
            What the person decided.
        class_names : sequence of str
            The project's classes (to check ``decision``).
        batch_id : int, optional
            The open batch the decision belongs to; it must hold the image. The batch
            finishes, in the same transaction, when every one of its images has a decision.
        source : {"batch", "review", "import"}, default="batch"
            Where the decision was made.
        seen_event : int, optional
            Optimistic concurrency: the id of the image's latest event the page showed (0:
            none; with ``batch_id``, its latest event in that batch). If another decision was
            recorded since (another window), nothing is recorded and :class:`LabelConflict`
            says so. None records unconditionally.

        Returns
        -------
        bool
            Whether this decision finished the batch.

        Raises
        ------
        ValueError
            An invalid decision or source.
        UnknownImage
            No image has this id.
        LabelConflict
            ``batch_id`` is not the open batch or does not hold the image, or the image
            changed since ``seen_event``.
        """
        decision.check(class_names)
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}; use one of {list(SOURCES)}")
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is None:
                raise UnknownImage(f"no image with id {image_id}")
            if batch_id is not None:
                self._check_in_open_batch(db, batch_id, image_id)
            if seen_event is not None:
                self._check_unchanged(db, image_id, batch_id, seen_event)
            in_batch = batch_id if batch_id is not None else self._open_batch_of(db, image_id)
            self._append(db, image_id, decision, in_batch, source)
            return in_batch is not None and self._finish_if_complete(db, in_batch)

    def record_many(self, decisions, class_names, *, source="import") -> int:
        """Append many events in one transaction: all are recorded, or none.

        Parameters
        ----------
        decisions : iterable of (int, Decision)
            ``(image_id, decision)`` pairs.
        class_names : sequence of str
            The project's classes.
        source : {"batch", "review", "import"}, default="import"
            Where the decisions come from.

        Returns
        -------
        int
            Number of events appended.

        Raises
        ------
        ValueError
            An invalid decision (nothing is recorded).
        UnknownImage
            An unknown image id (nothing is recorded).
        """
        decisions = list(decisions)
        for _, decision in decisions:
            decision.check(class_names)
        with self._transaction() as db:
            known = {row[0] for row in db.execute("SELECT id FROM images")}
            open_batches = set()
            for image_id, decision in decisions:
                if image_id not in known:
                    raise UnknownImage(f"no image with id {image_id}")
                in_batch = self._open_batch_of(db, image_id)   # it counts for the open batch
                self._append(db, image_id, decision, in_batch, source)
                open_batches.add(in_batch)
            for batch_id in open_batches - {None}:
                self._finish_if_complete(db, batch_id)
        return len(decisions)

    @staticmethod
    def _append(db, image_id, decision, batch_id, source) -> None:
        db.execute("INSERT INTO events (image_id, kind, label, batch_id, source, created_at) "
                   "VALUES (?, ?, ?, ?, ?, ?)",
                   (image_id, decision.kind, decision.label, batch_id, source, time.time()))

    @staticmethod
    def _check_in_open_batch(db, batch_id, image_id) -> None:
        batch = db.execute("SELECT finished_at FROM batches WHERE id = ?", (batch_id,)).fetchone()
        if batch is None:
            raise LabelConflict(f"no batch with id {batch_id}")
        if batch["finished_at"] is not None:
            raise LabelConflict(f"batch {batch_id} is finished; edit its labels on the review page")
        if db.execute("SELECT 1 FROM batch_items WHERE batch_id = ? AND image_id = ?",
                      (batch_id, image_id)).fetchone() is None:
            raise LabelConflict(f"image {image_id} is not in batch {batch_id}")

    @staticmethod
    def _open_batch_of(db, image_id):
        """The id of the open batch if it holds the image, else None."""
        row = db.execute("SELECT b.id FROM batches b JOIN batch_items i ON i.batch_id = b.id "
                         "WHERE b.finished_at IS NULL AND i.image_id = ?", (image_id,)).fetchone()
        return None if row is None else row[0]

    @staticmethod
    def _check_unchanged(db, image_id, batch_id, seen_event) -> None:
        """:class:`LabelConflict` if the image's latest event (in ``batch_id`` when given) is
        not ``seen_event`` (0: none)."""
        if batch_id is None:
            latest = db.execute("SELECT * FROM events WHERE id = (SELECT MAX(id) FROM events "
                                "WHERE image_id = ?)", (image_id,)).fetchone()
        else:
            latest = db.execute("SELECT * FROM events WHERE id = (SELECT MAX(id) FROM events "
                                "WHERE image_id = ? AND batch_id = ?)", (image_id, batch_id)).fetchone()
        if (0 if latest is None else latest["id"]) != seen_event:
            now = "no decision" if latest is None else (latest["label"] if latest["kind"] == "class"
                                                         else latest["kind"])
            raise LabelConflict(f"image {image_id} was changed in another window (now: {now}); "
                                "this page now shows the current answer")

    @staticmethod
    def _finish_if_complete(db, batch_id) -> bool:
        last = db.execute(
            "SELECT i.guess, e.kind, e.label FROM batch_items i LEFT JOIN events e ON e.id = "
            "(SELECT MAX(id) FROM events WHERE batch_id = i.batch_id AND image_id = i.image_id) "
            "WHERE i.batch_id = ?", (batch_id,)).fetchall()
        if any(row["kind"] in (None, "unlabel") for row in last):   # unlabeled again (review): undecided
            return False
        judged = [row for row in last if row["kind"] in LABEL_KINDS]
        right = sum(row["kind"] == "class" and row["label"] == row["guess"] for row in judged)
        db.execute("UPDATE batches SET finished_at = ?, n_judged = ?, n_right = ? WHERE id = ?",
                   (time.time(), len(judged), right, batch_id))
        return True

    def states(self) -> dict:
        """The latest event of every image that has one.

        Returns
        -------
        dict
            Image id -> event row (``kind``, ``label``, ``created_at``, ``source``...).
        """
        return {row["image_id"]: row for row in self._rows(LATEST)}

    def labels(self, kinds=LABEL_KINDS) -> list[dict]:
        """Current decisions, in image order, with their path and number of events.

        Parameters
        ----------
        kinds : sequence of str, default=("class", "ood")
            The kinds to list (add ``"skip"`` for skipped images).

        Returns
        -------
        list of dict
            ``image_id``, ``path``, ``status``, ``kind``, ``label``, ``created_at``,
            ``source``, ``batch_id`` and ``n_events`` (more than 1: the label was edited).
        """
        kinds = list(kinds)
        marks = ",".join("?" * len(kinds))
        return self._rows(
            f"SELECT e.image_id, i.path, i.status, e.kind, e.label, e.created_at, e.source, "
            f"e.batch_id, (SELECT COUNT(*) FROM events WHERE image_id = e.image_id) AS n_events "
            f"FROM ({LATEST}) e JOIN images i ON i.id = e.image_id WHERE e.kind IN ({marks}) "
            f"ORDER BY e.image_id", kinds)

    def history(self, image_id) -> list[dict]:
        """Every event of one image, oldest first.

        Parameters
        ----------
        image_id : int
            The image.

        Returns
        -------
        list of dict
            Event rows.

        Raises
        ------
        UnknownImage
            No image has this id.
        """
        self.image(image_id)
        return self._rows("SELECT * FROM events WHERE image_id = ? ORDER BY id", (int(image_id),))

    def events(self) -> list[dict]:
        """Every event of the project, oldest first, with the image path.

        Returns
        -------
        list of dict
            Event rows plus ``path``.
        """
        return self._rows("SELECT e.*, i.path FROM events e JOIN images i ON i.id = e.image_id "
                          "ORDER BY e.id")

    def last_event_id(self) -> int:
        """Id of the newest event (0 before any): a watermark of what a model was trained on.

        Returns
        -------
        int
            The largest event id.
        """
        return int(self._scalar("SELECT COALESCE(MAX(id), 0) FROM events"))

    # -- batches --------------------------------------------------------------------------

    def create_batch(self, items, *, strategy: str, model_round: int, scores=None) -> int:
        """Store the next batch to label with the model's guesses (one transaction).

        Parameters
        ----------
        items : sequence of (int, str, float)
            ``(image_id, guessed class, confidence)`` in display order.
        strategy : str
            Name of the strategy that chose it.
        model_round : int
            Trainings done before it was chosen.
        scores : sequence of dict, optional
            One per item, stored with it for :mod:`modal_vlm.evaluation`: ``audit`` (drawn
            at random), ``model_labels``, ``proba`` (list of float: the model's probabilities
            before the label), ``temperature`` (that calibrated ``confidence``; None: not
            calibrated) and ``scale`` (that model's margin scale; None: 1).

        Returns
        -------
        int
            The new batch's id.

        Raises
        ------
        LabelConflict
            A batch is still open.
        ValueError
            ``items`` is empty.
        """
        items = list(items)
        if not items:
            raise ValueError("a batch needs at least one image")
        if scores is not None and len(scores) != len(items):
            raise ValueError(f"{len(scores)} scores for {len(items)} items")
        with self._transaction() as db:
            open_id = db.execute("SELECT id FROM batches WHERE finished_at IS NULL").fetchone()
            if open_id is not None:
                raise LabelConflict(f"batch {open_id[0]} is still open")
            batch_id = db.execute("INSERT INTO batches (created_at, strategy, model_round) VALUES "
                                  "(?, ?, ?)", (time.time(), strategy, model_round)).lastrowid
            db.executemany("INSERT INTO batch_items VALUES (?, ?, ?, ?, ?)",
                           [(batch_id, position, int(image_id), guess, float(confidence))
                            for position, (image_id, guess, confidence) in enumerate(items)])
            db.executemany("INSERT INTO batch_scores (batch_id, image_id, audit, model_labels, proba, temperature, "
                           "scale) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [(batch_id, int(image_id), int(bool(score["audit"])), int(score["model_labels"]),
                             json.dumps([float(p) for p in score["proba"]]),
                             None if score["temperature"] is None else float(score["temperature"]),
                             None if score.get("scale") is None else float(score["scale"]))
                            for (image_id, _, _), score in zip(items, scores or [])])
        return batch_id

    def batch_scores(self) -> list[dict]:
        """Every stored test-then-train score, with the image's current decision.

        Returns
        -------
        list of dict
            ``batch_id``, ``image_id``, ``audit`` (bool), ``model_labels``, ``proba`` (list
            of float), ``temperature`` (None: not calibrated), ``scale`` (None: 1), ``confidence`` (shown on the
            card), and
            ``kind`` / ``label`` of the image's latest event (None without one): in batch
            order, then display order.
        """
        rows = self._rows(
            f"SELECT s.*, b.confidence, e.kind, e.label FROM batch_scores s JOIN batch_items b "
            f"ON b.batch_id = s.batch_id AND b.image_id = s.image_id LEFT JOIN ({LATEST}) e "
            f"ON e.image_id = s.image_id ORDER BY s.batch_id, b.position")
        for row in rows:
            row.update(audit=bool(row["audit"]), proba=json.loads(row["proba"]))
        return rows

    def batch(self, batch_id=None):
        """A batch with its images, guesses and the decisions made in it so far.

        Parameters
        ----------
        batch_id : int, optional
            Default: the open batch.

        Returns
        -------
        dict or None
            ``id``, ``created_at``, ``strategy``, ``model_round``, ``finished_at`` and
            ``items`` (``image_id``, ``path``, ``status``, ``guess``, ``confidence``,
            ``calibrated`` (whether the confidence is calibrated; None for a batch stored
            without scores), ``kind``, ``label`` and ``event_id`` of the latest decision in
            this batch; kind and label None before one, or when the image was unlabeled
            again); None when there is no such batch (no open batch).
        """
        if batch_id is None:
            rows = self._rows("SELECT * FROM batches WHERE finished_at IS NULL")
        else:
            rows = self._rows("SELECT * FROM batches WHERE id = ?", (int(batch_id),))
        if not rows:
            return None
        batch = rows[0]
        batch["items"] = self._rows(
            "SELECT b.image_id, i.path, i.status, b.guess, b.confidence, s.temperature IS NOT NULL "
            "AS calibrated, s.batch_id AS scored, NULLIF(e.kind, 'unlabel') AS kind, e.label, e.id AS event_id "
            "FROM batch_items b JOIN images i ON i.id = b.image_id LEFT JOIN events e ON e.id = "
            "(SELECT MAX(id) FROM events WHERE batch_id = b.batch_id AND image_id = b.image_id) "
            "LEFT JOIN batch_scores s ON s.batch_id = b.batch_id AND s.image_id = b.image_id "
            "WHERE b.batch_id = ? ORDER BY b.position", (batch["id"],))
        for item in batch["items"]:   # the audit flag stays in batch_scores: a page must not see it
            item["calibrated"] = None if item.pop("scored") is None else bool(item["calibrated"])
        return batch

    def batches(self) -> list[dict]:
        """Every batch, oldest first, with how often the model's guess was right.

        Returns
        -------
        list of dict
            ``id``, ``created_at``, ``finished_at``, ``strategy``, ``model_round``,
            ``n_items``, ``n_judged`` (class and out-of-distribution labels when it
            finished), ``n_right`` (labeled with the guessed class) and ``accuracy``
            (``n_right / n_judged``; None while open or when nothing was judged).
        """
        rows = self._rows("SELECT b.*, (SELECT COUNT(*) FROM batch_items WHERE batch_id = b.id) "
                          "AS n_items FROM batches b ORDER BY b.id")
        for row in rows:
            row["accuracy"] = row["n_right"] / row["n_judged"] if row["n_judged"] else None
        return rows

    def counts(self, class_names) -> dict:
        """What the page's side panel shows: labels per class and the other states.

        Parameters
        ----------
        class_names : sequence of str
            The project's classes (all of them listed, zeros included).

        Returns
        -------
        dict
            ``per_class`` (class -> labels), ``ood``, ``skip``, ``unlabeled`` (readable
            images without a decision), ``unreadable``, ``missing`` and ``images``.
        """
        per_class = dict.fromkeys(class_names, 0)
        counts = {"ood": 0, "skip": 0}
        for row in self._rows(f"SELECT e.kind, e.label, COUNT(*) AS n FROM ({LATEST}) e "
                              f"GROUP BY e.kind, e.label"):
            if row["kind"] == "class":
                per_class[row["label"]] = per_class.get(row["label"], 0) + row["n"]
            elif row["kind"] in counts:
                counts[row["kind"]] = row["n"]
        status = {row["status"]: row["n"] for row in
                  self._rows("SELECT status, COUNT(*) AS n FROM images GROUP BY status")}
        unlabeled = self._scalar(
            f"SELECT COUNT(*) FROM images i LEFT JOIN ({LATEST}) e ON e.image_id = i.id "
            f"WHERE i.status = 'ok' AND (e.kind IS NULL OR e.kind = 'unlabel')")
        return {"per_class": per_class, **counts, "unlabeled": unlabeled,
                "unreadable": status.get("unreadable", 0), "missing": status.get("missing", 0),
                "images": sum(status.values())}


__all__ = ["Decision", "LabelConflict", "LabelStore", "UnknownImage"]
