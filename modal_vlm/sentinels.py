"""The two labels that are not classes: :data:`UNLABELED` and :data:`NONE`.

``y`` holds entries of ``class_names`` or indices into it, and two integers that are not
classes:

* :data:`UNLABELED` (-1): no label yet (scikit-learn's semi-supervised convention); used by
  the UEO fit modes;
* :data:`NONE` (-2): a person looked at the image and said "none of these classes" (a
  screenshot, a blurred shot, another object). It costs a label and is a label: the
  estimator and the strategies learn from it (see :doc:`/open_set`).

Both may appear beside class names in one ``y`` (``["cat", NONE, "dog"]``). modAL's
``ActiveLearner.teach`` stacks ``y`` arrays with NumPy, which turns such a mix into text
(``["cat", "-2", "dog"]``); the texts ``"-1"`` and ``"-2"`` therefore mean the same as the
numbers, unless they are class names themselves.

>>> import modal_vlm
>>> modal_vlm.NONE
-2
>>> none_mask(["cat", "-2", -2, "dog"], ["cat", "dog"]).tolist()
[False, True, True, False]
"""
from __future__ import annotations

import numpy as np

#: Label of a sample without a label (scikit-learn's semi-supervised convention).
UNLABELED = -1
#: Label of a sample of none of the classes ("none of these classes").
NONE = -2


def _as_labels(y) -> np.ndarray:
    # A list keeps its elements' types (np.asarray would turn [name, -2] into strings).
    y = np.array(y, dtype=object) if isinstance(y, (list, tuple)) else np.asarray(y)
    return y.ravel() if y.ndim == 2 and y.shape[1] == 1 else y


def sentinel_mask(y, sentinel, class_names=()) -> np.ndarray:
    """Where ``y`` holds ``sentinel`` (:data:`UNLABELED` or :data:`NONE`), as a number or as
    its text (what NumPy makes of it beside names), the text only if it is not a class name.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Labels: class names, indices, sentinels.
    sentinel : int
        :data:`UNLABELED` or :data:`NONE`.
    class_names : sequence of str, default=()
        The classes: a class called ``"-2"`` keeps its name.

    Returns
    -------
    np.ndarray of bool of shape (n_samples,)
        True where ``y`` holds ``sentinel``.

    Examples
    --------
    >>> sentinel_mask([0, -1, -2], UNLABELED).tolist()
    [False, True, False]
    """
    y = _as_labels(y)
    if y.dtype.kind in "iuf":
        return y == sentinel
    text = str(int(sentinel))
    match_text = text not in set(class_names)
    flat = [(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v == sentinel)
            or (isinstance(v, (float, np.floating)) and v == sentinel)
            or (match_text and isinstance(v, (str, np.str_)) and v == text) for v in y.ravel().tolist()]
    return np.asarray(flat, dtype=bool).reshape(y.shape)


def none_mask(y, class_names=()) -> np.ndarray:
    """Where ``y`` says "none of these classes" (:data:`NONE`, or its text ``"-2"``).

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Labels: class names, indices, sentinels.
    class_names : sequence of str, default=()
        The classes (a class called ``"-2"`` keeps its name).

    Returns
    -------
    np.ndarray of bool of shape (n_samples,)
        True where ``y`` says "none of these classes".

    Examples
    --------
    >>> none_mask(np.array([3, -2, -1])).tolist()
    [False, True, False]
    """
    return sentinel_mask(y, NONE, class_names)
