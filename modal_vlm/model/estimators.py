"""The library's estimators by name, for the experiment runner, the CLI and the labeling app.

* ``"prompt"``: :class:`~modal_vlm.ClipPromptClassifier`, CoOp prompt tuning, the canonical
  estimator (the PCB/CEC protocol's learner);
* ``"linear"``: :class:`~modal_vlm.ClipLinearProbe`, a zero-shot-initialised linear head on
  the cached embeddings, as accurate on 10 to 80 labels at a small fraction of the fit time
  (``benchmarks/results/learners.md``): the labeling app's and the demo's learner.

Both take the same data and answer the same calls, so either goes wherever the other does.
"""
from __future__ import annotations

import importlib

#: name -> (module, class) of each estimator; imported on first use (torch is heavy).
ESTIMATORS = {"prompt": ("classifier", "ClipPromptClassifier"), "linear": ("linear_probe", "ClipLinearProbe")}


def list_estimators() -> list[str]:
    """Names :func:`get_estimator` accepts.

    Returns
    -------
    list of str
        The registered learners, the canonical prompt learner first.

    Examples
    --------
    >>> list_estimators()
    ['prompt', 'linear']
    """
    return list(ESTIMATORS)


def get_estimator(name: str):
    """The estimator class called ``name``.

    Parameters
    ----------
    name : {"prompt", "linear"}
        See the module docstring.

    Returns
    -------
    type
        :class:`~modal_vlm.ClipPromptClassifier` or :class:`~modal_vlm.ClipLinearProbe`.

    Raises
    ------
    ValueError
        An unknown name (the message lists the valid ones).

    Examples
    --------
    >>> get_estimator("linear").__name__
    'ClipLinearProbe'
    """
    if name not in ESTIMATORS:
        raise ValueError(f"unknown learner {name!r}; valid: {', '.join(ESTIMATORS)}")
    module, cls = ESTIMATORS[name]
    return getattr(importlib.import_module(f".{module}", __package__), cls)


__all__ = ["ESTIMATORS", "get_estimator", "list_estimators"]
