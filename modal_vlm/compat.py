"""Make modAL work with the scikit-learn a fresh install resolves.

modAL-python 0.4.1 (what pip picks beside ``skorch>=1.0``; 0.4.2.x pins the unimportable
``skorch==0.9.0``) validates taught data with
``check_X_y(..., force_all_finite=...)``. scikit-learn 1.6 renamed that argument to
``ensure_all_finite`` and 1.8 removed the old name, so ``ActiveLearner.teach`` raises
``TypeError`` there.

:func:`patch_modal` gives modAL a ``check_X_y`` that translates the old keyword; it changes
nothing else, only the name modAL's own modules look up, and only when the installed
scikit-learn lacks ``force_all_finite``. ``import modal_vlm`` applies it, so the canonical
``ActiveLearner(estimator=ClipPromptClassifier(...))`` loop runs unchanged.
"""
from __future__ import annotations

import functools
import importlib
import inspect

from sklearn.utils import check_X_y as _sklearn_check_X_y

#: modAL modules that bind ``check_X_y`` at import time.
MODAL_MODULES = ("modAL.models.base",)


def _needs_patch() -> bool:
    return "force_all_finite" not in inspect.signature(_sklearn_check_X_y).parameters


@functools.wraps(_sklearn_check_X_y)
def check_X_y(X, y, *args, force_all_finite=None, **kwargs):
    """scikit-learn's ``check_X_y`` accepting modAL's old ``force_all_finite`` keyword."""
    if force_all_finite is not None:
        kwargs.setdefault("ensure_all_finite", force_all_finite)
    return _sklearn_check_X_y(X, y, *args, **kwargs)


def patch_modal() -> bool:
    """Point modAL's ``check_X_y`` at :func:`check_X_y` where scikit-learn needs it.

    Idempotent; a no-op when modAL is not installed or scikit-learn still accepts
    ``force_all_finite``.

    Returns
    -------
    bool
        Whether a modAL module was patched.

    Examples
    --------
    >>> import modal_vlm  # already applied on import
    >>> patch_modal() in (True, False)
    True
    """
    if not _needs_patch():
        return False
    patched = False
    for name in MODAL_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if getattr(module, "check_X_y", None) is _sklearn_check_X_y:
            module.check_X_y = check_X_y
            patched = True
    return patched
