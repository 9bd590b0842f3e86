"""Make modAL work with the scikit-learn a fresh install resolves, and make its ``teach``
all or nothing.

modAL-python 0.4.1 (what pip picks beside ``skorch>=1.0``; 0.4.2.x pins the unimportable
``skorch==0.9.0``) has two problems :func:`patch_modal` fixes:

* It validates taught data with ``check_X_y(..., force_all_finite=...)``. scikit-learn 1.6
  renamed that argument to ``ensure_all_finite`` and 1.8 removed the old name, so
  ``ActiveLearner.teach`` raises ``TypeError`` there. modAL's modules get a ``check_X_y``
  that translates the old keyword, only where the installed scikit-learn lacks it.
* ``ActiveLearner.teach`` appends ``X`` and ``y`` to ``X_training`` / ``y_training``
  *before* it fits. When the fit fails (an unreadable image, a bad label) the bad samples
  stay in the labeled set and every later ``teach`` fails too. ``teach`` is wrapped so that
  a failed or interrupted call restores the labeled set as it was; with
  :class:`~modal_vlm.ClipPromptClassifier`, whose failed ``fit`` leaves the model as it was,
  the learner is then exactly as before the call.

Nothing else changes. The first use of the package's API (``from modal_vlm import ...``)
and ``import modal_vlm.classifier`` apply it, so the canonical ``ActiveLearner(estimator=ClipPromptClassifier(...))`` loop runs unchanged.
"""
from __future__ import annotations

import functools
import importlib
import inspect

from sklearn.utils import check_X_y as _sklearn_check_X_y

#: modAL modules that bind ``check_X_y`` at import time.
MODAL_MODULES = ("modAL.models.base",)
#: modAL learners whose ``teach`` is made all or nothing.
MODAL_LEARNERS = (("modAL.models.learners", "ActiveLearner"),)


def _needs_patch() -> bool:
    return "force_all_finite" not in inspect.signature(_sklearn_check_X_y).parameters


@functools.wraps(_sklearn_check_X_y)
def check_X_y(X, y, *args, force_all_finite=None, **kwargs):
    """scikit-learn's ``check_X_y`` accepting modAL's old ``force_all_finite`` keyword."""
    if force_all_finite is not None:
        kwargs.setdefault("ensure_all_finite", force_all_finite)
    return _sklearn_check_X_y(X, y, *args, **kwargs)


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


def patch_modal() -> bool:
    """Apply both fixes of the module docstring to the installed modAL.

    Idempotent; a no-op when modAL is not installed. The ``check_X_y`` fix applies only
    when scikit-learn no longer accepts ``force_all_finite``.

    Returns
    -------
    bool
        Whether anything was patched by this call.

    Examples
    --------
    >>> import modal_vlm  # already applied on first use
    >>> patch_modal() in (True, False)
    True
    """
    patched = False
    if _needs_patch():
        for name in MODAL_MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            if getattr(module, "check_X_y", None) is _sklearn_check_X_y:
                module.check_X_y = check_X_y
                patched = True
    for module_name, class_name in MODAL_LEARNERS:
        try:
            learner = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue
        if not getattr(learner.teach, "__modal_vlm_all_or_nothing__", False):
            learner.teach = all_or_nothing_teach(learner.teach)
            patched = True
    return patched
