"""The one rule for class names, shared by the estimator, the experiment runner and the
labeling app.

A class name becomes a prompt (``"a photo of a {}."``), so two names the text encoder cannot
tell apart make two identical classes: tied probabilities, and ``predict`` always answers
the first. Names that differ only in case or in spacing (``"cat"`` / ``"Cat"``,
``"cat"`` / ``"cat "``) are refused, and so are names with surrounding spaces, which no
one means.

Loads nothing heavy: the command line checks names before any model is built.
"""
from __future__ import annotations

from ..exceptions import InvalidParameterError


def name_key(name: str) -> str:
    """What two class names must differ in: the name without case and spacing differences.

    Parameters
    ----------
    name : str
        A class name.

    Returns
    -------
    str
        ``name`` case-folded, with runs of whitespace as one space and none around it.

    Examples
    --------
    >>> name_key("  Tabby   Cat ")
    'tabby cat'
    """
    return " ".join(name.split()).casefold()


def check_class_names(names, what: str = "class_names") -> None:
    """Raise :class:`~modal_vlm.exceptions.InvalidParameterError` unless ``names`` are at
    least 2 distinct class names.

    Each name must be a non-empty string without surrounding spaces, and no two names may
    differ only in case or spacing (see the module docstring).

    Parameters
    ----------
    names : sequence of str
        The class names.
    what : str, default="class_names"
        How the error names them (``"class folders of data/train"``, ``"--classes"``...).

    Raises
    ------
    InvalidParameterError
        Fewer than 2 names, a name that is not a non-empty string, surrounding spaces, or
        names that differ only in case or spacing (the message names them).

    Examples
    --------
    >>> check_class_names(["cat", "dog"])
    >>> check_class_names(["cat", "Cat"])  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    modal_vlm.exceptions.InvalidParameterError: class_names 'cat' and 'Cat' differ only in case or spacing: the model
    reads them as the same class. Give each class a distinct name.
    """
    if isinstance(names, str) or not hasattr(names, "__len__") or len(names) < 2:
        raise InvalidParameterError(f"{what} must be a list of at least 2 names, got {names!r}.")
    names = list(names)
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise InvalidParameterError(f"{what} must be non-empty strings, got {names!r}.")
    spaced = [n for n in names if n != n.strip()]
    if spaced:
        raise InvalidParameterError(f"{what} has names with surrounding spaces: {spaced}; write them without "
                                    f"surrounding spaces ({spaced[0]!r} -> {spaced[0].strip()!r}).")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidParameterError(f"{what} has duplicates: {duplicates}.")
    first = {}
    for name in names:
        other = first.setdefault(name_key(name), name)
        if other != name:
            raise InvalidParameterError(f"{what} {other!r} and {name!r} differ only in case or spacing: the model "
                                        "reads them as the same class. Give each class a distinct name.")


__all__ = ["check_class_names", "name_key"]
