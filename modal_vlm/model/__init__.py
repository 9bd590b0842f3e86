"""The estimators and what only they use: prompt tuning of a frozen CLIP-like model.

* :class:`ClipPromptClassifier` (:mod:`.classifier`): the canonical estimator, CoOp prompt
  tuning as a scikit-learn classifier (skorch); :data:`COOP_PROTOCOL` its reference recipe;
* :class:`ClipLinearProbe` (:mod:`.linear_probe`): its fast sibling, a linear head;
* :mod:`.estimators`: both by name; :mod:`.class_names`: the one rule for class names.

The estimator's parts, each testable without a backbone: the declared parameters
(:mod:`._params`), label encoding and the accuracy (:mod:`._labels`), the learned state
(:mod:`._state`), the scikit-learn tags (:mod:`._tags`), the fit modes (:mod:`.fit_modes`)
and their training data (:mod:`.training_data`), the training schedule and callbacks
(:mod:`.schedule`), the losses (:mod:`.losses`) and the module (:mod:`.prompted_clip`,
:mod:`.prompt_learner`); and what the frozen encoders give it, the embeddings and the class
text features (:mod:`._encoders`).

The estimators are imported on first use, so :mod:`.class_names` and :mod:`.estimators`
load without torch (the command line checks names before any model is built).
"""
import importlib

#: Public name -> the submodule that defines it.
_EXPORTS = {"COOP_PROTOCOL": "classifier", "ClipPromptClassifier": "classifier",
            "ClipLinearProbe": "linear_probe"}

__all__ = list(_EXPORTS)


def __getattr__(name):  # PEP 562: the estimators (and torch) load on first use
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
