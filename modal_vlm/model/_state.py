"""The estimator's learned state: snapshot and restore, the all-or-nothing fit, and the state
a pickle (or ``set_params``) leaves pending until ``module_`` is rebuilt.

What was learned (the context vectors, adapted normalisation layers, optimizer state and
history) is kept as a :func:`snapshot` on the CPU: a pickle holds it instead of the torch
objects, a failed ``fit`` restores it, and a module rebuilt from changed parameters
(:func:`load_pending`) takes it back where it still applies.
"""
from __future__ import annotations

import contextlib
import copy
import warnings

import numpy as np
import torch
from skorch.utils import get_map_location

from ..exceptions import BackboneUnavailableError
from ._labels import names_given
from ._params import PLACEMENT_PARAMS, PREDICTION_PARAMS

#: What a pickle leaves out: skorch's components, rebuilt from the parameters on load, and
#: the markers of a fit in progress (skorch's Checkpoint may pickle during training).
NOT_PICKLED = ("module_", "criterion_", "optimizer_", "callbacks_", "_in_transaction_", "_interrupted_")


def to_cpu(value):
    """``value`` (nested dicts and lists of tensors) with every tensor copied to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(v) for v in value)
    return value


def snapshot(net) -> dict:
    """A copy of what ``net`` learned, on the CPU: what a pickle holds instead of the torch objects."""
    return {"module": to_cpu(net.module_.state_dict()), "optimizer": to_cpu(net.optimizer_.state_dict()),
            "history": copy.deepcopy(net.history_), "module_params": net.module_params_}


def restore(net, saved) -> None:
    """Load a :func:`snapshot` into ``net``'s module and optimizer (built alike)."""
    net.module_.load_state_dict(saved["module"])
    net.optimizer_.load_state_dict(saved["optimizer"])
    net.history_ = saved["history"]


def pickled_state(net) -> dict:
    """``net``'s ``__getstate__``: the parameters and what was learned, not the frozen encoders
    (rebuilt by name on first use after loading)."""
    state = {k: v for k, v in vars(net).items() if k not in NOT_PICKLED}
    if net.initialized_:
        state["_pending_state_"] = snapshot(net)
        state["initialized_"] = False
    return state


def rebuild_for(net, params) -> None:
    """``set_params(**params)``'s rebuild, as skorch's: if ``params`` change what the
    predictions depend on, rebuild ``module_`` now, keeping what was learned where it applies
    (the warning that it does not points at the ``set_params`` call)."""
    if net.initialized_ and any(key in params for key in PREDICTION_PARAMS):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rebuild_if_changed(net, PREDICTION_PARAMS)
        for warning in caught:
            warnings.warn(warning.message, warning.category, stacklevel=3)


def rebuild_if_changed(net, keys=None) -> None:
    """Rebuild ``module_`` now if one of ``keys`` (None: any parameter it was built from)
    changed since it was built, keeping what was learned where it applies."""
    if not net.initialized_:
        return
    built, now = net.module_params_, net._module_params()
    if any(built.get(key) != now.get(key) for key in (now if keys is None else keys)):
        net._pending_state_ = snapshot(net)
        net.initialize()


def check_backbone_rebuilds(net) -> None:
    """Raise :class:`~modal_vlm.exceptions.BackboneUnavailableError` (from the cause) if the
    backbone of a saved model cannot be loaded here."""
    try:
        net.backbone_
    except (OSError, ValueError, ImportError, RuntimeError) as exc:
        raise BackboneUnavailableError(
            f"Cannot rebuild the frozen backbone of this saved {type(net).__name__} "
            f"(model_name={net.model_name!r}, pretrained={net.pretrained!r}): {exc}. A saved "
            "model holds the learned prompt and rebuilds its encoders by name: restore the "
            "weights, or point to them with set_params(pretrained=...); the learned prompt is "
            "kept until then.") from exc


def load_pending(net, saved) -> None:
    """Load a :func:`snapshot` into the module just built from ``net``'s current parameters:
    refused if the backbone's weights changed under the same settings; dropped with a
    warning (zero-shot until the next fit) where changed settings make it inapplicable."""
    if not bool(saved["module"]["prompt_trained"]):
        return  # zero-shot: nothing was learned, the fresh module is the same model
    built_from = saved["module_params"]
    changed = [k for k, v in net.module_params_.items() if k not in PLACEMENT_PARAMS and built_from.get(k) != v]
    differences = net.module_.mismatches(saved["module"])
    if differences and not changed:
        raise ValueError(
            f"The backbone rebuilt from model_name={net.model_name!r}, pretrained={net.pretrained!r} is "
            f"not the one this model's prompt was learned with ({'; '.join(differences)}): its weights "
            "changed. Restore them to use the saved model.")
    if differences:
        warnings.warn(f"{', '.join(changed)} changed since the prompt was learned, and the learned prompt "
                      f"does not apply to the new settings ({'; '.join(differences)}): predictions are "
                      "zero-shot until the next fit.", UserWarning, stacklevel=5)
        return
    restore(net, saved)


def initialize_keeping_learned(net, initialize) -> None:
    """Build ``net``'s components (``initialize``: skorch's), then load the state a pickle or
    ``set_params`` left pending. Until that succeeds the state stays pending, so a failed
    rebuild (a moved weights file) can be retried after ``set_params``."""
    pending = vars(net).pop("_pending_state_", None)
    history = vars(net).get("history_")
    try:
        if pending is not None:
            check_backbone_rebuilds(net)
            net.history_ = None  # skorch clears the history in place; the saved one is kept
        initialize()
        if pending is not None:
            load_pending(net, pending)
    except BaseException:
        if pending is not None:
            net._pending_state_, net.history_, net.initialized_ = pending, history, False
        raise


@contextlib.contextmanager
def all_or_nothing(net):
    """Restore ``net`` as it was if the block raises (or is interrupted)."""
    if vars(net).get("_in_transaction_"):
        yield
        return
    before = dict(vars(net))
    learned = snapshot(net) if net.initialized_ else None  # warm starts train in place
    net._in_transaction_ = True
    try:
        yield
    except BaseException:
        vars(net).clear()
        vars(net).update(before)
        if learned is not None:
            restore(net, learned)
        raise
    finally:
        vars(net).pop("_in_transaction_", None)


@contextlib.contextmanager
def labels_of(net, y):
    """Run a training call on ``y``: inside it, predictions (of scoring callbacks) are
    indices, like the training targets; after a successful call ``classes_`` is
    ``class_names`` if ``y`` held names; a failed call restores the previous state."""
    by_name = names_given(y if y is None else np.asarray(y), net.class_names)
    had, previous = hasattr(net, "_labels_by_name"), getattr(net, "_labels_by_name", False)
    net._labels_by_name = False
    try:
        yield
    except BaseException:
        if had:
            net._labels_by_name = previous
        else:
            del net._labels_by_name
        raise
    net._labels_by_name = by_name


class LearnedStateMixin:
    """The estimators' skorch hooks around their learned state: ``initialize`` loads a pending
    state, pickling keeps what was learned and not the frozen encoders, and an unfitted
    estimator initialises itself on first use (zero-shot prediction is a valid state)."""

    def initialize(self):
        # Every fit starts a fresh prompt (the protocol), so skorch's "Re-initializing ..."
        # lines carry no news: they are printed only with verbose >= 2.
        verbose = self.verbose
        self.verbose = verbose if verbose >= 2 else 0
        try:
            initialize_keeping_learned(self, super().initialize)
        finally:
            self.verbose = verbose
        return self

    def check_is_fitted(self, attributes=None, *args, **kwargs):
        if not self.initialized_:
            self.initialize()
        return super().check_is_fitted(attributes, *args, **kwargs)

    def __getstate__(self):
        # The torch objects are rebuilt on first use after loading: a pickle holds the
        # parameters and what was learned, not the frozen encoders.
        return pickled_state(self)

    def __setstate__(self, state):
        state = dict(state)
        # As skorch: a model saved on a GPU loads on a machine without one (DeviceWarning).
        state["device"] = self._check_device(state["device"], get_map_location(state["device"]))
        vars(self).update(state)
