"""Label encoding: ``y`` as the user gives it (class names or indices into ``class_names``,
with :data:`~modal_vlm.NONE` for "none of these classes" and -1 for unlabeled samples) ->
int64 indices, the estimator's training targets. Pure functions of ``(y, class_names)``.

Examples
--------
>>> from modal_vlm import NONE
>>> encode_labels(["dog", NONE, "cat", -1], ["cat", "dog"]).tolist()
[1, -2, 0, -1]
>>> names_given(["dog", NONE], ["cat", "dog"]), names_given([1, 0], ["cat", "dog"])
(True, False)
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import DataConversionWarning
from sklearn.metrics import accuracy_score

from ..exceptions import InvalidParameterError
from ..sentinels import NONE, UNLABELED, sentinel_mask


def encode_labels(y, class_names) -> np.ndarray:
    """``y`` as int64 indices into ``class_names`` (names looked up, -1 and -2 kept).

    Raises
    ------
    InvalidParameterError
        Unknown names, names mixed with numbers, non-integer numbers.
    """
    # A list keeps its elements' types (np.asarray would turn [name, 1] into strings).
    y = np.array(y, dtype=object) if isinstance(y, (list, tuple)) else np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:  # a column vector (check_targets warns)
        y = y.ravel()
    if y.dtype.kind in "iu" or (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
        return y.astype(np.int64)
    if y.dtype.kind not in "USO":
        kind = "continuous values" if y.dtype.kind == "f" else f"dtype {y.dtype}"
        raise InvalidParameterError(f"Unknown label type: y must hold entries of class_names or integer indices into "
                                    f"it, got {kind}.")
    lookup = {name: i for i, name in enumerate(class_names)}
    # -1 and -2 (UNLABELED, NONE) may stand beside names, as numbers or as the text NumPy
    # makes of them when modAL stacks them with names.
    sentinels = np.full(y.shape, 0, dtype=np.int64)
    for sentinel in (UNLABELED, NONE):
        sentinels[sentinel_mask(y, sentinel, class_names)] = sentinel
    is_name = np.array([isinstance(v, str) for v in y.ravel()], dtype=bool).reshape(y.shape) & (sentinels == 0)
    numbers = y[~is_name & (sentinels == 0)]
    if is_name.any() and numbers.size:
        raise InvalidParameterError("y mixes class names with numbers; use names (with modal_vlm.NONE for \"none of "
                                    "these classes\" and -1 for unlabeled samples) or indices throughout.")
    unknown = sorted({str(v) for v in y[is_name] if v not in lookup})
    if unknown:
        raise InvalidParameterError(f"Unknown labels {unknown[:10]}: y must hold entries of class_names "
                                    f"({len(class_names)} names) or indices into it.")
    if not is_name.any():  # an object array (or a list) of numbers
        numbers = np.asarray([int(sentinel) if sentinel else v
                              for v, sentinel in zip(y.ravel().tolist(), sentinels.ravel())]).reshape(y.shape)
        if numbers.dtype.kind in "OUS":
            raise InvalidParameterError("Unknown label type: y must hold entries of class_names or integer indices "
                                        "into it.")
        return encode_labels(numbers, class_names)
    return np.array([lookup[v] if named else int(sentinel) for v, named, sentinel
                     in zip(y.ravel(), is_name.ravel(), sentinels.ravel())], dtype=np.int64).reshape(y.shape)


def names_given(y, class_names) -> bool:
    """Whether ``y`` names its classes (then ``predict`` answers names), not indices."""
    if y is None:
        return False
    y = np.asarray(y)
    return y.dtype.kind in "USO" and any(
        isinstance(v, str) and not sentinel for v, sentinel in
        zip(y.ravel(), sentinel_mask(y, UNLABELED, class_names) | sentinel_mask(y, NONE, class_names)))


def check_targets(n_images: int, y, class_names) -> np.ndarray:
    """``y`` for ``n_images`` training images as indices (:func:`encode_labels`), or an error
    that names what is wrong (a column vector is accepted with scikit-learn's warning).

    Raises
    ------
    InvalidParameterError
        No image, no ``y``, ``y`` not 1-d or of another length, labels outside ``class_names``.
    """
    if n_images == 0:
        raise InvalidParameterError("X is empty: fit needs at least one labeled image.")
    if y is None:
        raise InvalidParameterError("ClipPromptClassifier requires y to be passed, but the target y is None "
                                    "(entries of class_names or indices into it).")
    given, y = y, np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:  # a column vector, as scikit-learn accepts it
        warnings.warn("A column-vector y was passed when a 1d array was expected; it is used as "
                      "y.ravel().", DataConversionWarning, stacklevel=4)
        given = y = y.ravel()
    if y.ndim != 1:
        raise InvalidParameterError(f"y must be 1-d, got shape {y.shape}.")
    if len(y) != n_images:
        raise InvalidParameterError(f"X and y have different lengths: {n_images} images, {len(y)} labels.")
    labels = encode_labels(given, class_names)
    known = labels[(labels != UNLABELED) & (labels != NONE)]
    bad = sorted(set(known[(known < 0) | (known >= len(class_names))].astype(int).tolist()))
    if bad:
        raise InvalidParameterError(
            f"Unknown labels {bad[:10]}: y must hold class indices in 0..{len(class_names) - 1} "
            f"(class_names has {len(class_names)} entries).")
    return labels


def check_classes(classes, class_names) -> None:
    """Refuse a ``partial_fit(classes=...)`` naming classes outside ``class_names``."""
    given = set(np.asarray(classes).tolist())
    if not (given <= set(class_names) or given <= set(range(len(class_names)))):
        raise InvalidParameterError(f"classes={sorted(map(str, given))} are not all in class_names "
                                    f"{list(class_names)!r} (or their indices).")


def class_accuracy(labels, predicted, sample_weight=None) -> float:
    """Accuracy of ``predicted`` indices against encoded ``labels``, over the images of the
    classes: those labeled :data:`~modal_vlm.NONE` have no right class and are left out.

    Raises
    ------
    ValueError
        ``labels`` holds no image of the classes.

    Examples
    --------
    >>> from modal_vlm import NONE
    >>> class_accuracy(np.array([0, 1, NONE]), np.array([0, 0, 1]))
    0.5
    """
    of_a_class = labels != NONE
    if not of_a_class.any():
        raise ValueError("y holds only modal_vlm.NONE: accuracy needs images of the classes (score images of "
                         "none of the classes with score_samples and modal_vlm.metrics.ood_metrics).")
    weights = None if sample_weight is None else np.asarray(sample_weight)[of_a_class]
    return float(accuracy_score(labels[of_a_class], predicted[of_a_class], sample_weight=weights))
