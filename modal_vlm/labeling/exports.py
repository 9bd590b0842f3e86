"""Exports of a labeling project: labels (CSV, JSON), predictions for every image (CSV), and
the trained classifier.

One renderer, :func:`render`, serves the page's download links and ``modal-vlm label export``.

* Labels CSV: one row per labeled image (``kind`` ``class``: ``label`` is the class name;
  ``kind`` ``ood``: none of the classes, ``label`` empty; skipped images are left out).
* Labels JSON: the classes, the current labels and **every** label event in order (edits
  included): everything the project knows, in one file.
* Predictions CSV: every image of the folder with the model's class, its confidence (the
  maximum probability, also UEO's in-distribution score), one probability column per class,
  and the person's label where there is one; unreadable and missing images are listed with
  their status and no prediction.
* The classifier: ``model.pkl``, a pickle of the fitted
  :class:`~modal_vlm.ClipPromptClassifier` (``pickle.load`` it and call ``predict``).
"""
from __future__ import annotations

import csv
import io
import json
import time
from typing import NamedTuple, Union

from .._validation import Options, check
from ..exceptions import ModalVLMError
from .labelstudio import LOCAL_FILES_PREFIX, label_studio_config, label_studio_tasks
from .store import LABEL_KINDS

#: What ``modal-vlm label export --what`` accepts, with the default file format of each.
EXPORTS = {"labels": "csv", "predictions": "csv", "model": "pkl", "label-studio": "json",
           "label-studio-config": "xml"}


def _iso(timestamp) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(timestamp)) if timestamp else ""


def _csv(header, rows) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def labels_csv(store) -> str:
    """The current labels as CSV: ``path, kind, label, labeled_at, source, batch, n_events``.

    Parameters
    ----------
    store : LabelStore
        The project's labels.

    Returns
    -------
    str
        CSV text, one row per labeled image (class or out-of-distribution), in image order.
    """
    return _csv(["path", "kind", "label", "labeled_at", "source", "batch", "n_events"],
                [[row["path"], row["kind"], row["label"] or "", _iso(row["created_at"]),
                  row["source"], row["batch_id"] or "", row["n_events"]]
                 for row in store.labels(LABEL_KINDS)])


def labels_json(store, settings) -> dict:
    """The classes, current labels and full event history, ready for :func:`json.dump`.

    Parameters
    ----------
    store : LabelStore
        The project's labels.
    settings : Settings
        The project's settings.

    Returns
    -------
    dict
        ``images_dir``, ``classes``, ``labels`` (as :func:`labels_csv`'s rows),
        ``skipped`` (paths) and ``events`` (every decision: ``path``, ``kind``, ``label``,
        ``at``, ``source``, ``batch``).
    """
    labels = [{"path": row["path"], "kind": row["kind"], "label": row["label"],
               "labeled_at": _iso(row["created_at"]), "source": row["source"],
               "batch": row["batch_id"], "n_events": row["n_events"]}
              for row in store.labels(LABEL_KINDS)]
    events = [{"path": row["path"], "kind": row["kind"], "label": row["label"],
               "at": _iso(row["created_at"]), "source": row["source"], "batch": row["batch_id"]}
              for row in store.events()]
    return {"images_dir": settings.images_dir, "classes": list(settings.classes), "labels": labels,
            "skipped": [row["path"] for row in store.labels(["skip"])], "events": events}


def predictions_csv(store, settings, images, proba, model_info=None) -> str:
    """Predictions with confidences for every image of the project, as CSV.

    Parameters
    ----------
    store : LabelStore
        The project's images and labels.
    settings : Settings
        The project's settings (class names).
    images : list of dict
        The readable images that ``proba`` describes (``id``...).
    proba : ndarray of shape (len(images), n_classes)
        Their class probabilities.
    model_info : dict, optional
        What the model was trained on (``round``, ``n_labels``); None: zero-shot.

    Returns
    -------
    str
        CSV: ``path, status, prediction, confidence, label_kind, label, model_round,
        p_<class>...``; every image of the project, in id order.
    """
    classes = list(settings.classes)
    by_id = {image["id"]: p for image, p in zip(images, proba)}
    states = store.states()
    round_ = "" if model_info is None else model_info["round"]
    rows = []
    for image in store.images():
        state = states.get(image["id"])
        kind, label = (state["kind"], state["label"] or "") if state and state["kind"] in LABEL_KINDS \
            else ("", "")
        p = by_id.get(image["id"])
        if p is None:
            rows.append([image["path"], image["status"], "", "", kind, label, ""] + [""] * len(classes))
        else:
            rows.append([image["path"], image["status"], classes[int(p.argmax())], f"{p.max():.6f}",
                         kind, label, round_] + [f"{v:.6f}" for v in p])
    return _csv(["path", "status", "prediction", "confidence", "label_kind", "label", "model_round"]
                + [f"p_{name}" for name in classes], rows)


class NothingToExport(ModalVLMError, ValueError):
    """The export asked for does not exist yet (no trained model, no such batch)."""


class Export(NamedTuple):
    """One rendered export.

    Parameters
    ----------
    content : str or bytes
        The file's contents (bytes for the model).
    filename : str
        The name it is offered under.
    media_type : str
        Its MIME type.
    summary : str
        What it holds, in a few words (``24 rows``), for the command line's message.
    """

    content: Union[str, bytes]
    filename: str
    media_type: str
    summary: str


def render(what, project, store, *, format=None, session=None, batch=None,
           url_prefix=LOCAL_FILES_PREFIX) -> Export:
    """Render one of :data:`EXPORTS` of a project.

    Parameters
    ----------
    what : {"labels", "predictions", "model", "label-studio", "label-studio-config"}
        The export.
    project : Project
        The project (settings, model file).
    store : LabelStore
        Its labels.
    format : {"csv", "json"}, optional
        Labels: CSV (default) or JSON with the full edit history; ignored by the others.
    session : LabelingSession, optional
        Predictions only: the session whose model predicts (prepared: its images encoded).
    batch : int, optional
        Label Studio tasks only: the batch (default: the open one).
    url_prefix : str, default=LOCAL_FILES_PREFIX
        Label Studio tasks only: the prefix of the image URLs.

    Returns
    -------
    Export
        Contents, file name, media type and summary.

    Raises
    ------
    NothingToExport
        No trained model yet, or no such batch.
    InvalidParameterError
        An unknown ``what`` or ``format``.
    """
    settings = project.settings
    check("what", what, [Options(EXPORTS)])
    check("format", format, [Options({"csv", "json"}), None])
    if what == "labels" and format in (None, "csv"):
        return Export(labels_csv(store), "labels.csv", "text/csv", f"{len(store.labels())} rows")
    if what == "labels":
        labels = labels_json(store, settings)
        return Export(json.dumps(labels, indent=1), "labels.json", "application/json",
                      f"{len(labels['labels'])} labels, {len(labels['events'])} events")
    if what == "predictions":
        images, proba = session.predict_all()
        return Export(predictions_csv(store, settings, images, proba, session.model_info), "predictions.csv",
                      "text/csv", f"{len(images)} rows")
    if what == "model":
        if not project.model_file.is_file():
            raise NothingToExport("no trained model yet: it is saved after the first batch")
        info = project.model_info()
        return Export(project.model_file.read_bytes(), "model.pkl", "application/octet-stream",
                      f"a pickle of the classifier trained after {info['round']} batches on "
                      f"{info['n_labels']} labels")
    if what == "label-studio":
        chosen = store.batch(batch)
        if chosen is None:
            raise NothingToExport("no open batch: the tasks export holds one batch; ask for a finished "
                                  "one by its id" if batch is None else f"no batch with id {batch}")
        tasks = label_studio_tasks(chosen, f"modal-vlm round {chosen['model_round']}", url_prefix)
        which = f"the open batch {chosen['id']}" if chosen["finished_at"] is None else f"batch {chosen['id']}"
        return Export(json.dumps(tasks, indent=1), f"label-studio-batch-{chosen['id']}.json",
                      "application/json",
                      f"{len(chosen['items'])} tasks: {which} only; other batches with --batch ID")
    return Export(label_studio_config(settings.classes), "label-studio-config.xml", "application/xml",
                  f"the labeling config: {len(settings.classes) + 1} choices")


__all__ = ["EXPORTS", "Export", "NothingToExport", "labels_csv", "labels_json", "predictions_csv", "render"]
