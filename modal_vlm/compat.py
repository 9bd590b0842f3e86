"""Make modAL work with the scikit-learn, pandas and NumPy a fresh install resolves, and make
its ``teach`` all or nothing.

modAL-python 0.4.1 (what pip picks beside ``skorch>=1.0``; 0.4.2.x pins the unimportable
``skorch==0.9.0``) was written for scikit-learn < 1.6, pandas < 2 and NumPy < 1.24. Three
things in it break on today's versions, each fixed here by one shim:

``check_X_y``
    modAL validates taught data with ``check_X_y(..., force_all_finite=...)``. scikit-learn
    1.6 renamed the argument ``ensure_all_finite`` and 1.8 removed the old name, so
    ``ActiveLearner.teach`` raises ``TypeError``. The shim passes the value on under the new
    name.
``data_vstack``
    modAL stacks ``DataFrame`` rows with ``DataFrame.append``, which pandas 2 removed, so
    ``teach`` on data frames and :func:`modAL.expected_error.expected_error_reduction` raise
    ``AttributeError``. The shim stacks them with ``pandas.concat``, exactly as
    ``DataFrame.append`` did (a list of rows given as ``Series`` becomes one frame first).
``np.float``
    :mod:`modAL.expected_error` annotates a parameter with ``np.float``, an alias NumPy 1.24
    removed, so importing it raises ``AttributeError``. The shim imports that module once
    with the alias present for the duration of the import (the annotation is its only use),
    then removes the alias again.

``ActiveLearner.teach``
    modAL appends ``X`` and ``y`` to ``X_training`` / ``y_training`` *before* it fits. When
    the fit fails (an unreadable image, a bad label) the bad samples stay in the labeled set
    and every later ``teach`` fails too. ``teach`` is wrapped so that a failed or interrupted
    call restores the labeled set as it was; with :class:`~modal_vlm.ClipPromptClassifier`,
    whose failed ``fit`` leaves the model as it was, the learner is then exactly as before
    the call. This one is not a version shim: it applies to every modAL.

:func:`patch_modal` applies the shims. ``import modal_vlm`` applies them to modAL's modules as
they are imported, before or after it (:mod:`modal_vlm._modal_hook`), without importing modAL
itself. Each one is applied
only where the installed library needs it, changes only the names modAL's own modules look
up (nothing in scikit-learn, pandas or NumPy), and is a no-op on the versions modAL was
written for. :data:`PATCHES` lists them; ``tools/run_modal_suite.py`` runs modAL's own test
suite with and without them.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import inspect
import sys

import numpy as np
from sklearn.utils import check_X_y as _sklearn_check_X_y

#: modAL modules that bind ``check_X_y`` at import time.
MODAL_MODULES = ("modAL.models.base",)
#: modAL learners whose ``teach`` is made all or nothing.
MODAL_LEARNERS = (("modAL.models.learners", "ActiveLearner"),)
#: modAL modules that bind ``data_vstack`` at import time. It is defined in the first (whose
#: ``add_row`` looks it up there too); the others are rebound when already imported, and
#: pick up the shim from there when imported later.
DATA_VSTACK_MODULES = ("modAL.utils.data", "modAL.utils", "modAL.models.base", "modAL.batch",
                       "modAL.expected_error")
#: modAL's own functions that a shim replaced, by name.
_ORIGINALS: dict = {}


def _needs_check_X_y_patch() -> bool:
    return "force_all_finite" not in inspect.signature(_sklearn_check_X_y).parameters


def _needs_data_vstack_patch() -> bool:
    import pandas as pd

    return not hasattr(pd.DataFrame, "append")


def _needs_np_float_patch() -> bool:
    return "float" not in vars(np)


@functools.wraps(_sklearn_check_X_y)
def check_X_y(X, y, *args, force_all_finite=None, **kwargs):
    """scikit-learn's ``check_X_y`` accepting modAL's old ``force_all_finite`` keyword."""
    if force_all_finite is not None:
        kwargs.setdefault("ensure_all_finite", force_all_finite)
    return _sklearn_check_X_y(X, y, *args, **kwargs)


def _modal_data_vstack():
    original = _ORIGINALS.get("data_vstack")
    if original is None:  # not patched (pandas < 2): modAL's module still holds its own
        from modAL.utils.data import data_vstack as original
    return original


def data_vstack(blocks):
    """modAL's ``data_vstack`` with data frames stacked by ``pandas.concat``.

    What ``DataFrame.append(blocks[1:])`` did in pandas < 2: rows that are not data frames
    (the ``Series`` of ``DataFrame.iterrows``) become one frame, whose index takes the
    first frame's index name; then everything is concatenated, indices kept. Any other
    input goes to modAL's own function.

    Parameters
    ----------
    blocks : sequence of array-like, sparse matrix or DataFrame
        What modAL stacks: its training data and the new rows.

    Returns
    -------
    array-like, sparse matrix or DataFrame
        The rows of all blocks, in order.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"a": [1, 2]})
    >>> data_vstack([frame, frame.iloc[[0]]])["a"].tolist()
    [1, 2, 1]
    """
    import pandas as pd
    import scipy.sparse as sp

    first = blocks[0]
    if not isinstance(first, pd.DataFrame) or any(sp.issparse(b) for b in blocks):
        return _modal_data_vstack()(blocks)
    rest = list(blocks[1:])
    if rest and not isinstance(rest[0], pd.DataFrame):
        rest = [pd.DataFrame(rest)]
        if first.index.name is not None:
            rest[0].index.name = first.index.name
    return pd.concat([first, *rest])


def _rebind(module_names, name, replacement, import_first=1) -> bool:
    """Point ``name`` at ``replacement`` in the modules of ``module_names``: the first
    ``import_first`` of them are imported, the others only rebound if already imported."""
    patched = False
    for i, module_name in enumerate(module_names):
        try:
            module = importlib.import_module(module_name) if i < import_first else sys.modules.get(module_name)
        except ImportError:
            continue
        current = getattr(module, name, None)
        if current is not None and current is not replacement:
            _ORIGINALS.setdefault(name, current)
            setattr(module, name, replacement)
            patched = True
    return patched


@contextlib.contextmanager
def np_float_alias(module_name="modAL.expected_error"):
    """NumPy's old ``np.float`` alias while ``module_name`` executes, if it is the modAL module
    that reads it and this NumPy lacks it (the annotation is its only use).

    Parameters
    ----------
    module_name : str, default="modAL.expected_error"
        The module about to execute; any other leaves NumPy alone.
    """
    if module_name != "modAL.expected_error" or not _needs_np_float_patch():
        yield
        return
    np.float = float  # what the alias was
    try:
        yield
    finally:
        del np.float


def _import_expected_error() -> bool:
    """Import :mod:`modAL.expected_error` with NumPy's old ``np.float`` alias present."""
    if "modAL.expected_error" in sys.modules or importlib.util.find_spec("modAL") is None:
        return False
    with np_float_alias():
        importlib.import_module("modAL.expected_error")
    return True


def _patch_check_X_y() -> bool:
    return _rebind(MODAL_MODULES, "check_X_y", check_X_y)


def _patch_data_vstack() -> bool:
    return _rebind(DATA_VSTACK_MODULES, "data_vstack", data_vstack)


def all_or_nothing_teach(teach):
    """``teach`` that puts the learner's ``X_training`` and ``y_training`` back if it raises.

    modAL builds a new labeled set on every ``teach`` (``data_vstack`` concatenates), so
    keeping the two references restores it exactly.

    Parameters
    ----------
    teach : callable
        ``ActiveLearner.teach``.

    Returns
    -------
    callable
        The wrapped method.
    """
    @functools.wraps(teach)
    def wrapper(self, *args, **kwargs):
        before = self.X_training, self.y_training
        try:
            return teach(self, *args, **kwargs)
        except BaseException:
            self.X_training, self.y_training = before
            raise

    wrapper.__modal_vlm_all_or_nothing__ = True
    return wrapper


def _patch_teach(import_modules=True) -> bool:
    patched = False
    for module_name, class_name in MODAL_LEARNERS:
        try:
            module = importlib.import_module(module_name) if import_modules else sys.modules[module_name]
            learner = getattr(module, class_name)
        except (ImportError, AttributeError, KeyError):
            continue
        if not getattr(learner.teach, "__modal_vlm_all_or_nothing__", False):
            learner.teach = all_or_nothing_teach(learner.teach)
            patched = True
    return patched


def _has_modal() -> bool:
    return importlib.util.find_spec("modAL") is not None


#: The shims, in the order :func:`patch_modal` applies them: ``(name, needed, apply)``.
#: ``needed()`` says whether the installed version needs it; ``apply()`` returns whether it
#: changed anything (False when already applied). ``np.float`` comes first, so that
#: ``modAL.expected_error`` is imported when ``data_vstack`` is rebound.
PATCHES = (
    ("np.float", _needs_np_float_patch, _import_expected_error),
    ("check_X_y", _needs_check_X_y_patch, _patch_check_X_y),
    ("data_vstack", _needs_data_vstack_patch, _patch_data_vstack),
    ("all_or_nothing_teach", _has_modal, _patch_teach),
)


def needed_patches() -> list[str]:
    """Names of the shims of :data:`PATCHES` that the installed versions need.

    Returns
    -------
    list of str
        A subset of ``["np.float", "check_X_y", "data_vstack", "all_or_nothing_teach"]``;
        only the last on scikit-learn < 1.6, pandas < 2 and NumPy < 1.24.

    Examples
    --------
    >>> set(needed_patches()) <= {"np.float", "check_X_y", "data_vstack", "all_or_nothing_teach"}
    True
    """
    return [name for name, needed, _ in PATCHES if needed()]


def patch_imported_modal() -> None:
    """Apply the shims the installed versions need to the modAL modules imported so far.

    What ``import modal_vlm``'s import hook (:mod:`modal_vlm._modal_hook`) runs after each
    modAL module loads: it imports nothing, so it is safe in the middle of modAL's imports.
    """
    if _needs_check_X_y_patch():
        _rebind(MODAL_MODULES, "check_X_y", check_X_y, import_first=0)
    if _needs_data_vstack_patch():
        _rebind(DATA_VSTACK_MODULES, "data_vstack", data_vstack, import_first=0)
    _patch_teach(import_modules=False)


def patch_modal() -> bool:
    """Apply the shims of :data:`PATCHES` the installed versions need.

    Idempotent; a no-op when modAL is not installed.

    Returns
    -------
    bool
        Whether anything was changed by this call.

    Examples
    --------
    >>> import modal_vlm  # already applied on first use
    >>> patch_modal()
    False
    """
    changed = False
    for _, needed, apply in PATCHES:
        if needed():
            changed = apply() or changed
    return changed
