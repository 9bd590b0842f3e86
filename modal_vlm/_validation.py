"""One validation layer: declared parameter constraints, one message format, one error.

Estimators and functions declare what each parameter may be (scikit-learn's
``_parameter_constraints`` style: a list of accepted forms per name) and call
:func:`validate_params` once, at ``fit`` or at the top of the function. Ad-hoc call sites use
:func:`check_int`, :func:`check_number` and :func:`check_choice`, which say the same thing in
the same words. Every failure is an :class:`~modal_vlm.exceptions.InvalidParameterError`
with the message ``"<name> must be <what>, got <value>."``.

scikit-learn's own validator is private API (``sklearn.utils._param_validation``), so the few
constraint kinds the library needs live here.

Examples
--------
>>> from numbers import Integral
>>> constraints = {"k": [Interval(Integral, 1, None)], "knn": [Options({"exact", "faiss"})]}
>>> validate_params(constraints, {"k": 3, "knn": "exact"})
>>> validate_params(constraints, {"k": 0, "knn": "exact"})
Traceback (most recent call last):
...
modal_vlm.exceptions.InvalidParameterError: k must be an integer >= 1, got 0.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from .exceptions import InvalidParameterError


@dataclass(frozen=True)
class Interval:
    """Real or integer numbers between ``low`` and ``high`` (``None``: unbounded).

    Parameters
    ----------
    kind : type
        :class:`numbers.Integral` or :class:`numbers.Real`; bools never count as numbers.
    low, high : float or None
        The bounds; ``None`` leaves that side open-ended.
    closed : {"left", "right", "both", "neither"}, default="left"
        Which bounds belong to the interval.

    Examples
    --------
    >>> from numbers import Real
    >>> 0.5 in Interval(Real, 0, 1, closed="both"), str(Interval(Real, 0, 1, closed="right"))
    (True, 'a number in (0, 1]')
    """

    kind: type
    low: float | None = None
    high: float | None = None
    closed: str = "left"

    def __contains__(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, self.kind):
            return False
        if isinstance(value, numbers.Real) and math.isnan(value):
            return False
        low_ok = self.low is None or (value >= self.low if self.closed in ("left", "both") else value > self.low)
        high_ok = self.high is None or (value <= self.high if self.closed in ("right", "both") else value < self.high)
        return low_ok and high_ok

    def __str__(self) -> str:
        noun = "an integer" if self.kind is numbers.Integral else "a number"
        left, right = self.closed in ("left", "both"), self.closed in ("right", "both")
        if self.high is None:
            return noun if self.low is None else f"{noun} {'>=' if left else '>'} {self.low:g}"
        if self.low is None:
            return f"{noun} {'<=' if right else '<'} {self.high:g}"
        return f"{noun} in {'[' if left else '('}{self.low:g}, {self.high:g}{']' if right else ')'}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values (strings, usually).

    Examples
    --------
    >>> str(Options({"b", "a"}))
    "one of 'a', 'b'"
    """

    values: frozenset

    def __init__(self, values):
        object.__setattr__(self, "values", frozenset(values))

    def __contains__(self, value) -> bool:
        try:
            return value in self.values
        except TypeError:  # an unhashable value is none of the options
            return False

    def __str__(self) -> str:
        words = [repr(v) for v in sorted(self.values, key=repr)]
        return words[0] if len(words) == 1 else "one of " + ", ".join(words)


def _accepts(constraint, value) -> bool:
    if constraint is None:
        return value is None
    if constraint == "boolean":
        return isinstance(value, (bool, numbers.Integral)) and value in (0, 1)
    if constraint is callable:
        return callable(value)
    if isinstance(constraint, type):
        return isinstance(value, constraint)
    return value in constraint


def _describe(constraint) -> str:
    if constraint is None:
        return "None"
    if constraint == "boolean":
        return "a bool"
    if constraint is callable:
        return "a callable"
    if isinstance(constraint, type):
        return f"an instance of {constraint.__name__}"
    return str(constraint)


def describe(constraints) -> str:
    """What a list of accepted forms says in words, in the order declared.

    Examples
    --------
    >>> from numbers import Integral
    >>> describe([Interval(Integral, 1, None), None])
    'an integer >= 1, or None'
    """
    words = [_describe(c) for c in constraints]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + ", or " + words[-1]


def check(name: str, value, constraints) -> None:
    """Raise :class:`~modal_vlm.exceptions.InvalidParameterError` unless ``value`` meets one
    of ``constraints`` (a list of :class:`Interval`, :class:`Options`, types, ``None``,
    ``"boolean"`` or ``callable``).

    Examples
    --------
    >>> check("tol", 0.1, [Interval(numbers.Real, 0, None)])
    """
    if not any(_accepts(c, value) for c in constraints):
        raise InvalidParameterError(f"{name} must be {describe(constraints)}, got {value!r}.")


def validate_params(constraints: dict, params: dict) -> None:
    """Check every parameter of ``params`` that ``constraints`` declares (see :func:`check`).

    Parameters
    ----------
    constraints : dict
        Parameter name -> list of accepted forms.
    params : dict
        Parameter name -> value (e.g. ``estimator.get_params(deep=False)``); names without a
        declared constraint are not checked here.

    Raises
    ------
    InvalidParameterError
        The first parameter, in declaration order, that meets none of its forms.
    """
    for name, accepted in constraints.items():
        if name in params:
            check(name, params[name], accepted)


def check_int(name: str, value, minimum: int = 1, *, allow_none: bool = False) -> None:
    """An integer (not a bool) >= ``minimum``, or None where allowed.

    Examples
    --------
    >>> check_int("rounds", 0)
    Traceback (most recent call last):
    ...
    modal_vlm.exceptions.InvalidParameterError: rounds must be an integer >= 1, got 0.
    """
    check(name, value, [Interval(numbers.Integral, minimum, None)] + ([None] if allow_none else []))


def check_number(name: str, value, low: float = 0.0, high: float = math.inf, *, closed_low: bool = False,
                 auto: bool = False) -> None:
    """A real number in ``(low, high)`` (``[low, high)`` with ``closed_low``; NaN never), or
    the string ``"auto"`` where allowed.

    Examples
    --------
    >>> check_number("dropout", 1.0, 0.0, 1.0, closed_low=True)
    Traceback (most recent call last):
    ...
    modal_vlm.exceptions.InvalidParameterError: dropout must be a number in [0, 1), got 1.0.
    """
    interval = Interval(numbers.Real, low, None if high == math.inf else high, "left" if closed_low else "neither")
    check(name, value, ([Options({"auto"})] if auto else []) + [interval])


def check_choice(name: str, value, options) -> None:
    """One of ``options``.

    Examples
    --------
    >>> check_choice("knn", "annoy", ("exact", "faiss"))
    Traceback (most recent call last):
    ...
    modal_vlm.exceptions.InvalidParameterError: knn must be one of 'exact', 'faiss', got 'annoy'.
    """
    check(name, value, [Options(options)])
