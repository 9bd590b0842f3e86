"""A labeling project: one directory holding everything a labeling session needs.

::

    PROJECT/
        settings.json      the image folder, classes, model, strategy... (written atomically)
        labels.sqlite      images, batches and label events (labeling.store.LabelStore)
        cache/             image embeddings (ClipPromptClassifier's cache_dir)
        model.pkl          the classifier trained on the labels (pickle of the estimator)
        model.json         what model.pkl was trained on
        server.lock        held while a server runs (one server per project)

:func:`open_project` creates the directory or resumes the project it holds.
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from .._files import with_legacy_settings
from ..model.class_names import check_class_names, name_key
from .labelstudio import OOD_CHOICE

#: The backbone of a new project (the offline reference model: no download, no GPU).
DEFAULT_MODEL = "linear-conse-efficientnet-lite0-minilm"
#: The query strategy of a new project (a name for :func:`modal_vlm.get_strategy`).
DEFAULT_STRATEGY = "cec"
FIT_MODES = ("supervised", "ueo")
#: The learners of a project (:func:`modal_vlm.model.estimators.get_estimator`); the first is the default.
LEARNERS = ("linear", "prompt")
SETTINGS_FORMAT = 1
#: Settings added after projects were first written, with the value a project without them
#: was made with (read with :func:`modal_vlm._files.with_legacy_settings`, as the runner's run
#: directories are): a project saved before the learner was a setting was prompt-tuned, and
#: stays so.
LEGACY_SETTINGS = {"learner": "prompt"}


@dataclass(frozen=True)
class Settings:
    """What a project is: its images, classes and how the model learns and queries.

    A frozen dataclass stored as ``settings.json``; the parameters are its attributes.

    Parameters
    ----------
    images_dir : str
        Absolute path of the image folder (images anywhere below it, any layout).
    classes : tuple of str
        Class names, in the order the page lists them (number keys 1, 2, ...).
    model : str, default=DEFAULT_MODEL
        Backbone name (:func:`modal_vlm.list_backbones`).
    pretrained : str, optional
        open_clip tag or weights file for the backbone.
    strategy : str, default="cec"
        Query strategy name (:func:`modal_vlm.get_strategy`).
    batch_size : int, optional
        Images per batch; None: the number of classes, at least 8 and at most 32.
    train_steps : int, optional
        Optimizer steps per training, which bound the wait between two batches. None: the
        learner's own (the linear head: ``ClipLinearProbe``'s 200 full-batch steps; prompt
        tuning: its epoch schedule, ``max_epochs="auto"``, capped at about 100 steps).
    fit_mode : {"supervised", "ueo"}, default="supervised"
        ``"ueo"`` also learns from the unlabeled images and from those labeled "none of these
        classes", through UEO's unlabeled loss (prompt only).
    seed : int, default=0
        Seeds training and every query: the same labels give the same next batch.
    device : str, default="cpu"
        Torch device.
    audit_fraction : float, default=0.2
        Share of every batch drawn at random from the unlabeled images (shown like any other
        card): the labels that keep the header's accuracy estimate honest
        (:mod:`modal_vlm.labeling.trust`); in [0, 1).
    learner : {"linear", "prompt"}, default="linear"
        ``"linear"``: :class:`~modal_vlm.ClipLinearProbe`, a zero-shot-initialised linear head
        (under a second per retraining, as accurate as prompt tuning on 10-80 labels:
        ``benchmarks/results/learners.md``); ``"prompt"``: CoOp prompt tuning
        (:class:`~modal_vlm.ClipPromptClassifier`), seconds to minutes per retraining.
    """

    images_dir: str
    classes: tuple
    model: str = DEFAULT_MODEL
    pretrained: str | None = None
    strategy: str = DEFAULT_STRATEGY
    batch_size: int | None = None
    train_steps: int | None = None
    fit_mode: str = "supervised"
    seed: int = 0
    device: str = "cpu"
    audit_fraction: float = 0.2
    learner: str = LEARNERS[0]

    def __post_init__(self):
        object.__setattr__(self, "classes", tuple(self.classes))

    @property
    def images_per_batch(self) -> int:
        """``batch_size``, or its default: the number of classes, clipped to [8, 32]."""
        return self.batch_size or min(max(len(self.classes), 8), 32)

    def check(self) -> None:
        """Raise ``ValueError`` naming the first invalid setting."""
        from ..backbones import list_backbones
        from ..strategies import get_strategy

        names = self.classes
        check_class_names(names, what="classes")   # the estimator's rule
        if name_key(OOD_CHOICE) in {name_key(n) for n in names}:
            raise ValueError(f"{OOD_CHOICE!r} is the app's answer for images of no class; "
                             "it cannot be a class name")
        get_strategy(self.strategy)
        if self.model not in list_backbones(include_open_clip=True):
            raise ValueError(f"unknown model {self.model!r}; see modal_vlm.list_backbones()")
        optional = tuple(name for name in ("batch_size", "train_steps") if getattr(self, name) is not None)
        for name in ("seed",) + optional:
            value = getattr(self, name)
            minimum = 0 if name == "seed" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if self.fit_mode not in FIT_MODES:
            raise ValueError(f"fit_mode must be one of {FIT_MODES}, got {self.fit_mode!r}")
        from ..evaluation import audit_count

        audit_count(self.audit_fraction, 1, self.images_per_batch)   # in [0, 1), leaving the strategy a pick
        if self.learner not in LEARNERS:
            raise ValueError(f"learner must be one of {LEARNERS}, got {self.learner!r}")

    def to_json(self) -> dict:
        """The settings as ``settings.json`` stores them.

        Returns
        -------
        dict
            Every field, plus the file format's version.
        """
        return {"format": SETTINGS_FORMAT, **asdict(self), "classes": list(self.classes)}

    @classmethod
    def from_json(cls, data: dict) -> "Settings":
        """Settings read back from :meth:`to_json`'s dict.

        Parameters
        ----------
        data : dict
            The contents of ``settings.json``.

        Returns
        -------
        Settings
            The project's settings.

        Raises
        ------
        ValueError
            An unknown format version or field.
        """
        data = dict(data)
        version = data.pop("format", None)
        if version != SETTINGS_FORMAT:
            raise ValueError(f"settings format {version!r} is not {SETTINGS_FORMAT}")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}")
        return cls(**with_legacy_settings(data, LEGACY_SETTINGS))


class Project:
    """Paths and settings of a project directory (see the module docstring).

    Parameters
    ----------
    root : str or path-like
        The project directory.
    settings : Settings
        Its settings.
    """

    def __init__(self, root, settings: Settings):
        self.root = Path(root).resolve()
        self.settings = settings

    @property
    def settings_file(self) -> Path:
        """``settings.json``."""
        return self.root / "settings.json"

    @property
    def database(self) -> Path:
        """``labels.sqlite``, the :class:`~modal_vlm.labeling.LabelStore`."""
        return self.root / "labels.sqlite"

    @property
    def cache_dir(self) -> Path:
        """``cache/``, the image embeddings."""
        return self.root / "cache"

    @property
    def model_file(self) -> Path:
        """``model.pkl``, the trained classifier."""
        return self.root / "model.pkl"

    @property
    def model_info_file(self) -> Path:
        """``model.json``, what ``model.pkl`` was trained on."""
        return self.root / "model.json"

    def save_settings(self) -> None:
        """Write ``settings.json`` (atomically)."""
        text = json.dumps(self.settings.to_json(), indent=2) + "\n"
        # Imported here: the runner package loads torch, and `modal-vlm --help` reads this module.
        from .._files import write_atomic

        write_atomic(self.settings_file, text.encode())

    def model_info(self) -> dict | None:
        """``model.json``: ``round``, ``trained_through`` (last event id), label counts...

        Returns
        -------
        dict or None
            None before the first training.
        """
        try:
            return json.loads(self.model_info_file.read_text())
        except FileNotFoundError:
            return None

    @classmethod
    def load(cls, root) -> "Project":
        """The project in ``root``.

        Parameters
        ----------
        root : str or path-like
            A project directory.

        Returns
        -------
        Project
            Its paths and settings.

        Raises
        ------
        FileNotFoundError
            ``root`` holds no project.
        ValueError
            Its ``settings.json`` cannot be read.
        """
        root = Path(root)
        file = root / "settings.json"
        if not file.is_file():
            raise FileNotFoundError(f"{str(root)!r} holds no labeling project (no settings.json)")
        try:
            settings = Settings.from_json(json.loads(file.read_text()))
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            raise ValueError(f"cannot read {file}: {exc}") from None
        return cls(root, settings)


def open_project(root, images_dir=None, classes=None, **changes) -> tuple[Project, list[str]]:
    """Create a project in ``root``, or resume the one it holds.

    Parameters
    ----------
    root : str or path-like
        The project directory; created if absent. An existing directory must be empty or
        hold a project.
    images_dir : str or path-like, optional
        The image folder; required for a new project. When resuming it must be the
        project's folder.
    classes : sequence of str, optional
        The classes; required for a new project. When resuming, a different list replaces
        the project's (for instance with a new class added) as long as every class that has
        labels stays: labels are stored by class name.
    **changes
        Other :class:`Settings` fields (None values are ignored). When resuming they replace
        the project's settings; only ``model``, ``pretrained``, ``strategy``,
        ``batch_size``, ``train_steps``, ``fit_mode``, ``learner``, ``device`` and ``audit_fraction``
        may change.

    Returns
    -------
    project : Project
        The project, its settings saved.
    notes : list of str
        What changed on resume, to tell the user.

    Raises
    ------
    ValueError
        Missing or invalid settings, another image folder, classes with labels dropped, or
        a non-empty directory that is not a project.
    FileNotFoundError
        The image folder does not exist.
    """
    from .store import LabelStore

    root = Path(root)
    changes = {key: value for key, value in changes.items() if value is not None}
    if images_dir is not None:
        images_dir = Path(images_dir)
        if not images_dir.is_dir():
            raise FileNotFoundError(f"image folder {str(images_dir)!r} does not exist or is not a folder")
        images_dir = str(images_dir.resolve())
    notes = []
    if (root / "settings.json").exists():
        project = Project.load(root)
        old = project.settings
        if images_dir is not None and images_dir != old.images_dir:
            raise ValueError(f"the project in {str(root)!r} labels {old.images_dir}, not {images_dir}; "
                             "use another --project for another folder")
        if changes.get("seed", old.seed) != old.seed:   # it made every batch so far
            raise ValueError(f"the project's seed is {old.seed}; it cannot change")
        new = replace(old, **changes, **({"classes": tuple(classes)} if classes else {}))
        if new.classes != old.classes:
            with contextlib.closing(LabelStore(project.database)) as store:
                labeled = store.counts(old.classes)["per_class"]
            dropped = [name for name, n in labeled.items() if n and name not in new.classes]
            if dropped:
                raise ValueError(f"classes {dropped} have labels in this project; keep them in --classes")
        notes = [f"{field.name}: {getattr(old, field.name)!r} -> {getattr(new, field.name)!r}"
                 for field in fields(Settings) if getattr(old, field.name) != getattr(new, field.name)]
        new.check()
        project.settings = new
    else:
        if images_dir is None or not classes:
            raise ValueError(f"{str(root)!r} holds no project yet: give the image folder and --classes")
        if root.exists() and any(root.iterdir()):
            raise ValueError(f"{str(root)!r} is not empty and holds no labeling project; "
                             "give a new or empty directory")
        settings = Settings(images_dir=images_dir, classes=tuple(classes), **changes)
        settings.check()
        root.mkdir(parents=True, exist_ok=True)
        project = Project(root, settings)
        notes = [f"new project, created {time.strftime('%Y-%m-%d %H:%M')}"]
    project.save_settings()
    LabelStore(project.database).close()
    return project, notes


__all__ = ["DEFAULT_MODEL", "DEFAULT_STRATEGY", "LEARNERS", "Project", "Settings", "open_project"]
