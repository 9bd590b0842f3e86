"""The data of an experiment: pool and test images from image folders, checked to be readable."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import train_test_split

from .._files import find_images, unreadable_reason
from ..datasets import load_image_folder
from ..model.class_names import check_class_names
from ..sentinels import NONE
from .pools import long_tailed


@dataclass(frozen=True)
class RunData:
    """Pool and test set of an experiment, labels indexing ``class_names``.

    A frozen dataclass; the parameters are its attributes. :func:`load_run_data` builds one
    from image folders; build one yourself to run an experiment on data in memory
    (``run_experiment(config, out, data=...)``).

    Parameters
    ----------
    X_pool : sequence
        The unlabeled pool: image paths (an array of str), images or arrays, anything
        :class:`~modal_vlm.ClipPromptClassifier` accepts.
    y_pool : np.ndarray of int, shape (n_pool,)
        The pool's labels (the simulated oracle), indices into ``class_names``, or
        :data:`modal_vlm.NONE` for images of none of the classes.
    X_test : sequence
        The test images, as ``X_pool``.
    y_test : np.ndarray of int, shape (n_test,)
        The test labels, indices into ``class_names`` or :data:`~modal_vlm.NONE`.
    class_names : list of str
        Class names, in label order; they become the classifier's prompts.
    source : object, optional
        Where the data come from (folders, or a description), recorded with the run.
    skipped : dict, optional
        Unreadable image files left out (``on_bad_image="skip"``), path -> reason.

    Examples
    --------
    >>> import numpy as np
    >>> data = RunData(np.array(["a.png", "b.png"]), np.array([0, 1]),
    ...                np.array(["c.png"]), np.array([1]), ["cat", "dog"], source="example")
    >>> data.summary()["pool_per_class"]
    {'cat': 1, 'dog': 1}
    """

    X_pool: object
    y_pool: np.ndarray
    X_test: object
    y_test: np.ndarray
    class_names: list
    source: object = None
    skipped: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """JSON-ready description: source, classes, images per class, skipped files.

        Returns
        -------
        dict
            ``source``, ``class_names``, ``n_pool``, ``n_test``, ``pool_per_class`` and
            ``test_per_class`` (class name -> count), ``pool_none`` and ``test_none`` (images
            of none of the classes), ``skipped_images``.
        """
        def per_class(y):
            return dict(zip(self.class_names, np.bincount(y[y >= 0], minlength=len(self.class_names)).tolist()))

        y_pool, y_test = np.asarray(self.y_pool), np.asarray(self.y_test)
        return {"source": self.source, "class_names": list(self.class_names),
                "n_pool": len(y_pool), "n_test": len(y_test),
                "pool_per_class": per_class(y_pool), "test_per_class": per_class(y_test),
                "pool_none": int(np.sum(y_pool == NONE)), "test_none": int(np.sum(y_test == NONE)),
                "skipped_images": dict(self.skipped)}


def unreadable_images(paths) -> dict:
    """The files among ``paths`` that PIL cannot decode, mapped to the reason.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> bad = pathlib.Path(tempfile.mkdtemp()) / "bad.jpg"
    >>> _ = bad.write_text("not an image")
    >>> list(unreadable_images([str(bad)]).values())[0].startswith("cannot identify image file")
    True
    """
    reasons = {path: unreadable_reason(path, decode=True)
               for path in map(str, paths)}  # plain str: a np.str_ would be named np.str_('...')
    return {path: reason for path, reason in reasons.items() if reason is not None}


def _drop_unreadable(paths, y, class_names, policy, what):
    """``(paths, y, skipped)`` without unreadable files ("skip"), or a ValueError ("fail")."""
    bad = unreadable_images(paths)
    if not bad:
        return paths, y, {}
    listing = "; ".join(f"{path}: {reason}" for path, reason in list(bad.items())[:5])
    more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
    if policy == "fail":
        raise ValueError(f"{len(bad)} unreadable image file(s) in {what}: {listing}{more}. "
                         "Fix or remove them, or pass on_bad_image='skip' (--on-bad-image skip).")
    warnings.warn(f"skipped {len(bad)} unreadable image file(s) in {what}: {listing}{more}", stacklevel=3)
    keep = ~np.isin(paths, list(bad))
    empty = [name for c, name in enumerate(class_names) if not np.any(y[keep] == c)]
    if empty:
        raise ValueError(f"class(es) {empty} of {what} have no readable image.")
    return paths[keep], y[keep], bad


def load_run_data(config) -> RunData:
    """Load the pool and test images that ``config`` names.

    Classes are the sub-folders of ``config.data``; ``config.test_data`` must have a folder
    for each of them (extra folders are ignored). Without ``test_data`` a stratified split of
    ``data`` (``test_size``, ``split_seed``) gives the test set. Every file is opened once to
    find unreadable images, handled by ``config.on_bad_image``.

    Parameters
    ----------
    config : RunConfig
        Reads ``data``, ``test_data``, ``test_size``, ``split_seed``, ``max_per_class``,
        ``max_test_per_class``, ``on_bad_image``, ``none_data`` and ``long_tail``.

    Returns
    -------
    RunData
        Image paths and labels, with ``source`` (the folders) and ``skipped`` files.

    Raises
    ------
    FileNotFoundError
        A missing folder or class folder.
    ValueError
        No data folder given, no class folder, class folders whose names differ only in case
        or spacing, a class without images, unreadable images
        (policy "fail"), or a split that cannot be stratified.

    Examples
    --------
    >>> from modal_vlm.runner import RunConfig
    >>> data = load_run_data(RunConfig(data="../shared/data/cifar10/train",
    ...                                max_per_class=20))                  # doctest: +SKIP
    >>> len(data.y_pool), len(data.y_test)                                 # doctest: +SKIP
    (160, 40)
    """
    if config.data is None:
        raise ValueError("no data folder: set data (--data DIR), one sub-folder of images per class.")
    paths, y, names = load_image_folder(config.data, max_per_class=config.max_per_class,
                                        random_state=config.split_seed)
    check_class_names(names, what=f"the class folders of {config.data}")  # before any image is read
    paths, y, skipped = _drop_unreadable(paths, y, names, config.on_bad_image, config.data)
    if config.test_data is None:
        try:
            pool, test = train_test_split(np.arange(len(y)), test_size=config.test_size, stratify=y,
                                          random_state=config.split_seed)
        except ValueError as exc:
            raise ValueError(f"cannot split {config.data!r} into pool and test set "
                             f"(test_size={config.test_size}): {exc}") from None
        pool, test = np.sort(pool), np.sort(test)
        X_pool, y_pool, X_test, y_test = paths[pool], y[pool], paths[test], y[test]
    else:
        X_pool, y_pool = paths, y
        X_test, y_test, _ = load_image_folder(config.test_data, classes=names,
                                              max_per_class=config.max_test_per_class,
                                              random_state=config.split_seed)
        X_test, y_test, skipped_test = _drop_unreadable(X_test, y_test, names, config.on_bad_image,
                                                        config.test_data)
        skipped.update(skipped_test)
    if config.long_tail is not None:
        keep = long_tailed(y_pool, config.long_tail)
        X_pool, y_pool = X_pool[keep], y_pool[keep]
    source = {"data": config.data, "test_data": config.test_data}
    if config.none_data is not None:
        none_pool, none_test, skipped_none = _none_images(config)
        skipped.update(skipped_none)
        X_pool, y_pool = np.concatenate([X_pool, none_pool]), np.r_[y_pool, np.full(len(none_pool), NONE)]
        X_test, y_test = np.concatenate([X_test, none_test]), np.r_[y_test, np.full(len(none_test), NONE)]
        source["none_data"] = config.none_data
    return RunData(X_pool, y_pool, X_test, y_test, names, source=source, skipped=skipped)


def _none_images(config):
    """``config.none_data``'s images split into pool and test parts (``test_size``,
    ``split_seed``), and the unreadable ones skipped (policy "skip")."""
    from pathlib import Path

    folder = Path(config.none_data)
    if not folder.is_dir():
        raise FileNotFoundError(f"none_data folder {config.none_data!r} does not exist or is not a folder")
    paths = np.asarray(find_images(folder), dtype=str)
    labels = np.full(len(paths), NONE)
    paths, labels, skipped = _drop_unreadable(paths, labels, [], config.on_bad_image, config.none_data)
    if len(paths) < 2:
        raise ValueError(f"none_data folder {config.none_data!r} holds {len(paths)} readable images; "
                         "at least 2 are needed (one for the pool, one for the test set).")
    try:
        pool, test = train_test_split(np.arange(len(paths)), test_size=config.test_size,
                                      random_state=config.split_seed)
    except ValueError as exc:
        raise ValueError(f"cannot split {config.none_data!r} into pool and test images "
                         f"(test_size={config.test_size}): {exc}") from None
    return paths[np.sort(pool)], paths[np.sort(test)], skipped
