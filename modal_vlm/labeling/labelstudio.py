"""Label Studio interop, without a Label Studio server: files in, files out.

* :func:`label_studio_tasks`: a batch as Label Studio *tasks* JSON, the model's guesses as
  pre-annotations (``predictions``), to import into a Label Studio project;
* :func:`label_studio_config`: the matching labeling configuration (an image and one single
  choice among the classes plus "none of these classes");
* :func:`parse_label_studio_export`: a Label Studio JSON export (the ``JSON`` format:
  tasks with ``annotations``) read back as label decisions for this project.

Images are referred to by URL. The tasks use Label Studio's local-files URL
(``/data/local-files/?d=`` + path; point its ``LOCAL_FILES_DOCUMENT_ROOT`` at the image
folder, or pass another ``url_prefix``) and carry the project's relative path in
``data.modal_vlm_path``, which the import uses first; without it, the import matches the
image URL's path against the project's paths (exactly, or by a unique path suffix).
"""
from __future__ import annotations

import urllib.parse
from xml.sax.saxutils import quoteattr

from .store import Decision

#: The choice that means "none of the classes" (kept as out-of-distribution).
OOD_CHOICE = "none of these classes"
#: Label Studio's URL of files served from its local storage.
LOCAL_FILES_PREFIX = "/data/local-files/?d="
FROM_NAME, TO_NAME = "label", "image"


def label_studio_config(class_names) -> str:
    """The Label Studio labeling configuration (XML) that matches the exported tasks.

    Parameters
    ----------
    class_names : sequence of str
        The project's classes.

    Returns
    -------
    str
        ``<View>`` with the image and a single choice per task.

    Examples
    --------
    >>> print(label_studio_config(["cat", "dog"]))
    <View>
      <Image name="image" value="$image"/>
      <Choices name="label" toName="image" choice="single" showInline="true">
        <Choice value="cat"/>
        <Choice value="dog"/>
        <Choice value="none of these classes"/>
      </Choices>
    </View>
    """
    choices = "".join(f"    <Choice value={quoteattr(name)}/>\n" for name in [*class_names, OOD_CHOICE])
    return (f'<View>\n  <Image name="{TO_NAME}" value="$image"/>\n'
            f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">\n'
            f"{choices}  </Choices>\n</View>")


def label_studio_tasks(batch, model_version="modal-vlm", url_prefix=LOCAL_FILES_PREFIX) -> list:
    """A batch as Label Studio tasks, each with the model's guess as a pre-annotation.

    Parameters
    ----------
    batch : dict
        A batch of :meth:`LabelStore.batch <modal_vlm.labeling.LabelStore.batch>`.
    model_version : str, default="modal-vlm"
        Shown by Label Studio beside the pre-annotations.
    url_prefix : str, default="/data/local-files/?d="
        Prepended to the URL-quoted relative path of each image.

    Returns
    -------
    list of dict
        Label Studio tasks: ``data`` (``image`` URL, ``modal_vlm_path``,
        ``modal_vlm_image_id``) and ``predictions``.

    Examples
    --------
    >>> batch = {"items": [{"image_id": 3, "path": "a b.png", "guess": "cat", "confidence": 0.75}]}
    >>> task = label_studio_tasks(batch)[0]
    >>> task["data"]["image"], task["predictions"][0]["result"][0]["value"]
    ('/data/local-files/?d=a%20b.png', {'choices': ['cat']})
    """
    return [{"data": {"image": url_prefix + urllib.parse.quote(item["path"]),
                      "modal_vlm_path": item["path"], "modal_vlm_image_id": item["image_id"]},
             "predictions": [{"model_version": model_version, "score": round(item["confidence"], 6),
                              "result": [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
                                          "value": {"choices": [item["guess"]]}}]}]}
            for item in batch["items"]]


def _image_path(task, paths: set) -> str | None:
    data = task.get("data") or {}
    if isinstance(data.get("modal_vlm_path"), str) and data["modal_vlm_path"] in paths:
        return data["modal_vlm_path"]
    url = next((v for v in data.values() if isinstance(v, str)), None) if "image" not in data \
        else data["image"]
    if not isinstance(url, str):
        return None
    parsed = urllib.parse.urlparse(url)
    query = urllib.parse.parse_qs(parsed.query)
    candidate = query["d"][0] if "d" in query else urllib.parse.unquote(parsed.path)
    candidate = candidate.replace("\\", "/").lstrip("/")
    if candidate in paths:
        return candidate
    matches = [p for p in paths if candidate.endswith("/" + p)]
    return matches[0] if len(matches) == 1 else None


def _check_task(task, where) -> None:
    """``ValueError`` naming the part of a task that is not shaped as Label Studio writes it."""
    def shaped(value, kind, what):
        if value is not None and not isinstance(value, kind):
            raise ValueError(f"{where}: {what} is a JSON {type(value).__name__}, not "
                             f"{'an object' if kind is dict else 'a list'}; nothing was imported")

    shaped(task.get("data"), dict, "'data'")
    shaped(task.get("annotations"), list, "'annotations'")
    for annotation in task.get("annotations") or []:
        shaped(annotation, dict, "an annotation")
        shaped(annotation.get("result"), list, "an annotation's 'result'")
        for result in annotation.get("result") or []:
            shaped(result, dict, "a result")
            shaped(result.get("value"), dict, "a result's 'value'")
            choices = (result.get("value") or {}).get("choices")
            shaped(choices, list, "'choices'")
            if any(not isinstance(choice, str) for choice in choices or []):
                raise ValueError(f"{where}: 'choices' holds {choices!r}, not class names; nothing was imported")


def _choice(task, where):
    """The chosen value of the task's latest submitted annotation; None when there is none."""
    _check_task(task, where)
    annotations = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    for annotation in reversed(annotations):  # Label Studio lists them oldest first
        chosen = [value for result in annotation.get("result") or []
                  for value in (result.get("value") or {}).get("choices") or []]
        if len(chosen) > 1:
            raise ValueError(f"{where}: {len(chosen)} choices {chosen}; one per image is expected")
        if chosen:
            return chosen[0]
    return None


def parse_label_studio_export(tasks, paths, class_names, skip_unknown=False) -> dict:
    """Label decisions from a Label Studio JSON export, checked before anything is recorded.

    Parameters
    ----------
    tasks : list of dict
        The parsed export (Label Studio's ``JSON`` format: tasks with ``data`` and
        ``annotations``).
    paths : dict
        The project's relative image path -> image id.
    class_names : sequence of str
        The project's classes; the choice ``"none of these classes"`` is out-of-distribution.
    skip_unknown : bool, default=False
        Leave out tasks whose image is not in the project instead of refusing the file.

    Returns
    -------
    dict
        ``decisions`` (``(image_id, Decision)`` pairs, the latest annotation of each task),
        ``unannotated`` (tasks without a submitted choice) and ``unknown`` (paths or URLs not
        in the project, left out with ``skip_unknown``).

    Raises
    ------
    ValueError
        Not a list of tasks, a task whose parts are not shaped as Label Studio writes them
        (``data`` or ``value`` a list...), an unknown choice, several choices for one image,
        or (unless ``skip_unknown``) images that are not in the project; the message names
        them.

    Examples
    --------
    >>> export = [{"data": {"image": "/data/local-files/?d=a.png"},
    ...            "annotations": [{"result": [{"value": {"choices": ["dog"]}}]}]}]
    >>> parsed = parse_label_studio_export(export, {"a.png": 1}, ["cat", "dog"])
    >>> parsed["decisions"]
    [(1, Decision(kind='class', label='dog'))]
    """
    if not isinstance(tasks, list) or not all(isinstance(task, dict) for task in tasks):
        raise ValueError("a Label Studio JSON export is a list of tasks (objects with 'data' and "
                         "'annotations'); export the project in Label Studio's 'JSON' format")
    known = set(paths)
    decisions, unknown, unannotated, bad = {}, [], 0, set()
    for number, task in enumerate(tasks):
        where = f"task {task.get('id', number)}"
        choice = _choice(task, where)
        if choice is None:
            unannotated += 1
            continue
        path = _image_path(task, known)
        if path is None:
            unknown.append(str((task.get("data") or {}).get("image", where)))
            continue
        if choice == OOD_CHOICE:
            decisions[paths[path]] = Decision("ood")
        elif choice in class_names:
            decisions[paths[path]] = Decision("class", choice)
        else:
            bad.add(str(choice))
    if bad:
        raise ValueError(f"choices {sorted(bad)} are not classes of this project {list(class_names)} "
                         f"nor {OOD_CHOICE!r}; nothing was imported")
    if unknown and not skip_unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise ValueError(f"{len(unknown)} annotated image(s) are not in this project: {shown}; "
                         "nothing was imported (skip them with --skip-unknown)")
    return {"decisions": sorted(decisions.items()), "unannotated": unannotated, "unknown": unknown}


def import_label_studio(store, class_names, tasks, skip_unknown=False) -> dict:
    """Record a Label Studio JSON export's labels as new events (one transaction).

    An image whose current label already equals the imported one gets no new event, so
    importing the same file twice changes nothing.

    Parameters
    ----------
    store : LabelStore
        The project's labels.
    class_names : sequence of str
        The project's classes.
    tasks : list of dict
        The parsed export.
    skip_unknown : bool, default=False
        See :func:`parse_label_studio_export`.

    Returns
    -------
    dict
        Counts: ``imported``, ``unchanged``, ``unannotated``, ``unknown``.

    Raises
    ------
    ValueError
        As :func:`parse_label_studio_export`; nothing is recorded then.
    """
    paths = {image["path"]: image["id"] for image in store.images()}
    parsed = parse_label_studio_export(tasks, paths, class_names, skip_unknown)
    states = store.states()
    new = [(image_id, decision) for image_id, decision in parsed["decisions"]
           if image_id not in states
           or (states[image_id]["kind"], states[image_id]["label"]) != (decision.kind, decision.label)]
    store.record_many(new, class_names, source="import")
    return {"imported": len(new), "unchanged": len(parsed["decisions"]) - len(new),
            "unannotated": parsed["unannotated"], "unknown": len(parsed["unknown"])}


__all__ = ["OOD_CHOICE", "import_label_studio", "label_studio_config", "label_studio_tasks",
           "parse_label_studio_export"]
