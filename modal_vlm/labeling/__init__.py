"""The labeling app behind ``modal-vlm label``: a person labels what the strategy picks.

The library's core (classifier, strategies, runner) knows nothing of this package; it uses
them like any user would. One module per part, in the order a request meets them:

* :mod:`~modal_vlm.labeling.commands`: the ``modal-vlm label`` / ``label export`` /
  ``label import`` command line;
* :mod:`~modal_vlm.labeling.project`: the project directory and its settings;
* :mod:`~modal_vlm.labeling.server`: the FastAPI app on uvicorn (the ``app`` extra), with
  the pages and assets of ``static/``;
* :mod:`~modal_vlm.labeling.store`: labels, batches and images in SQLite, append-only;
* :mod:`~modal_vlm.labeling.session`: the model work (scan, encode, train, query, save),
  synchronous, shared by every front end;
* :mod:`~modal_vlm.labeling.worker`: the background thread that runs the session's steps;
* :mod:`~modal_vlm.labeling.scan`: which files of the image folder exist (and may be served);
* :mod:`~modal_vlm.labeling.exports` and :mod:`~modal_vlm.labeling.labelstudio`: files out
  and in;
* :mod:`~modal_vlm.labeling.labelstudio_backend` (with
  :mod:`~modal_vlm.labeling.labelstudio_client`): the second front end, ``modal-vlm
  label-studio-backend``, Label Studio's ML backend on the same project, store and worker.

Nothing here imports the web stack until a server starts.

>>> from modal_vlm.labeling import DEFAULT_MODEL, DEFAULT_STRATEGY
>>> DEFAULT_MODEL, DEFAULT_STRATEGY
('linear-conse-efficientnet-lite0-minilm', 'cec')
"""
import importlib

#: Every public name and the submodule that defines it: imported on first use, so that
#: ``modal-vlm --help`` (which registers ``label``) loads neither torch nor the web stack.
_EXPORTS = {"BackgroundWorker": "worker", "DEFAULT_MODEL": "project", "DEFAULT_STRATEGY": "project",
            "Decision": "store", "LabelStore": "store", "LabelingSession": "session", "Project": "project",
            "Settings": "project", "open_project": "project"}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
