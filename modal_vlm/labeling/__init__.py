"""The labeling app (``modal-vlm label``): a person labels what the strategy picks."""
from .project import DEFAULT_MODEL, DEFAULT_STRATEGY, Project, Settings, open_project
from .store import Decision, LabelStore
from .worker import LabelingWorker

__all__ = ["DEFAULT_MODEL", "DEFAULT_STRATEGY", "Decision", "LabelStore", "LabelingWorker",
           "Project", "Settings", "open_project"]
