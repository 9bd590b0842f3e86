"""The estimator's parameters, declared in one place: their constraints, skorch's defaults
that differ here, the parameters predictions depend on, and the short repr.

:func:`validate` is the estimator's one validation layer (scikit-learn's
``_parameter_constraints`` style): ``fit`` runs it once, and the experiment runner runs it
through :meth:`~modal_vlm.ClipPromptClassifier.check_params` before any backbone loads. It
loads nothing. Every failure is an :class:`~modal_vlm.exceptions.InvalidParameterError`
(a ``ValueError`` and a ``TypeError``).
"""
from __future__ import annotations

import inspect
import reprlib
from numbers import Integral, Real

import numpy as np
import torch
from skorch import NeuralNet, NeuralNetClassifier
from skorch.callbacks import BatchScoring, EpochScoring

from .._validation import Interval, Options, validate_params
from ..embeddings.encoding import check_encode_dtype, check_workers
from ..exceptions import InvalidParameterError
from .class_names import check_class_names
from .fit_modes import FIT_MODES
from .prompted_clip import PromptedCLIP, check_template
from .schedule import AUTO_EPOCHS, user_callbacks

#: Values of ``ood_score``, the score of ``score_samples``.
OOD_SCORES = ("max_cosine", "max_probability")

#: Batch sizes where -1 means "every sample in one batch", as in skorch.
_BATCH = [Interval(Integral, 1, None), Options({-1})]

#: What each of the estimator's own parameters may be (skorch checks its own).
PARAMETER_CONSTRAINTS = {
    "n_ctx": [Interval(Integral, 1, None)],
    "lr": [Interval(Real, 0, None)],
    "warmup_lr": [Interval(Real, 0, None)],
    "tol": [Interval(Real, 0, None)],
    "batch_size": _BATCH,
    "unlabeled_batch_size": _BATCH,
    "encode_batch_size": [Interval(Integral, 1, None)],
    "max_epochs": [Interval(Integral, 0, None), Options({AUTO_EPOCHS})],
    "warmup_epochs": [Interval(Integral, 0, None)],
    "n_iter_no_change": [Interval(Integral, 1, None), None],
    "fit_mode": [Options(FIT_MODES)],
    "train_visual_norm": [Options({"auto"}), "boolean"],
    "ueo_temperature": [Interval(Real, 0, None, closed="neither")],
    "lambda_ueo": [Interval(Real, 0, None)],
    "lambda_kg": [Interval(Real, 0, None)],
    "ood_score": [Options(OOD_SCORES)],
}

#: The parameters a prediction reads as well as a fit (batches, encoding): checked again by
#: every prediction, since ``set_params`` may have changed them since the fit.
PREDICTION_TIME_PARAMS = ("lr", "warmup_lr", "tol", "batch_size", "unlabeled_batch_size", "encode_batch_size",
                          "max_epochs", "warmup_epochs", "n_iter_no_change")

#: Parameters the predictions depend on: ``set_params`` of one of them on an initialised
#: estimator rebuilds ``module_`` (keeping the learned prompt where it applies). The others
#: (``n_ctx``, ``ctx_init``...) shape training only and take effect at the next ``fit``.
PREDICTION_PARAMS = ("class_names", "model_name", "pretrained", "image_size", "device", "template")

#: Parameters ``module_`` is built from that a learned prompt does not depend on.
PLACEMENT_PARAMS = ("device", "template")

#: skorch parameters whose default here differs from skorch's (CoOp's recipe).
SKORCH_DEFAULTS = {
    "module": PromptedCLIP,
    "criterion": torch.nn.CrossEntropyLoss,
    "optimizer": torch.optim.SGD,
    "optimizer__momentum": 0.9,
    "optimizer__weight_decay": 5e-4,
    "train_split": None,
}


def skorch_defaults(kwargs: dict) -> dict:
    """:data:`SKORCH_DEFAULTS` under the skorch parameters given: SGD's settings stay SGD's."""
    if kwargs.get("optimizer", torch.optim.SGD) is not torch.optim.SGD:
        return {k: v for k, v in SKORCH_DEFAULTS.items() if not k.startswith("optimizer__")}
    return SKORCH_DEFAULTS


def validate(net, names=None) -> None:
    """Raise :class:`~modal_vlm.exceptions.InvalidParameterError` for an invalid parameter of
    ``net`` (only ``names``, if given): an unknown name, a value outside its constraint,
    invalid ``class_names`` or ``template``, skorch settings this estimator cannot honour."""
    if names is not None:
        validate_params({k: PARAMETER_CONSTRAINTS[k] for k in names}, vars(net))
        _check_encoding(net)
        return
    check_class_names(net.class_names)
    # skorch checks parameter names only once initialised (after the backbone loaded).
    known = {name for cls in type(net).__mro__ if "__init__" in vars(cls)
             for name in inspect.signature(cls.__init__).parameters}
    unknown = sorted(k for k in vars(net) if not k.startswith("_") and not k.endswith("_")
                     and "__" not in k and k not in known)
    if unknown:
        raise InvalidParameterError(
            f"Unknown parameter(s) {unknown} of {type(net).__name__}; see its documentation for the valid ones "
            "(any skorch parameter too, e.g. optimizer__momentum).")
    check_template(net.template)
    validate_params(PARAMETER_CONSTRAINTS, vars(net))
    _check_encoding(net)
    _check_skorch(net)


def _check_encoding(net) -> None:
    check_encode_dtype(net.encode_dtype)
    check_workers(net.encode_workers)


def _check_skorch(net) -> None:
    """A ``classes`` other than ``class_names`` or its indices, or scoring callbacks without
    skorch's prediction cache."""
    # Scoring callbacks score the predictions cached during the epoch (skorch's default);
    # without the cache they would need the targets of a skorch Dataset, which the
    # training samples (embeddings with UEO's weights) are not.
    scoring = [cb for cb in user_callbacks(net) if isinstance(cb, (EpochScoring, BatchScoring))]
    if any(not (cb.use_caching if net.use_caching == "auto" else net.use_caching) for cb in scoring) or (
            net.use_caching is False and net.train_split is not None):
        raise InvalidParameterError("Scoring callbacks need use_caching=True (skorch's default) here: they score "
                                    "the predictions cached during training.")
    if net.classes is not None:
        given = list(np.asarray(net.classes).tolist())
        if given not in (list(net.class_names), list(range(len(net.class_names)))):
            raise InvalidParameterError(
                f"classes={net.classes!r} does not match class_names: the classes are class_names. "
                "Leave classes=None (predictions follow y), or pass class_names (predict names) "
                "or range(len(class_names)) (predict indices).")


def signature_defaults(*functions) -> dict:
    """Named parameters of ``functions`` with their defaults (later functions win)."""
    defaults = {}
    for function in functions:
        for name, param in inspect.signature(function).parameters.items():
            if name != "self" and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                defaults[name] = param.default
    return defaults


class _ParamRepr(reprlib.Repr):
    """Short reprs of parameter values: long lists cut, classes and functions by name,
    skorch callbacks as ``Name(changed parameters)``."""

    def __init__(self):
        super().__init__()
        self.maxlist = self.maxtuple = 6
        self.maxstring, self.maxother = 60, 120

    def repr_type(self, obj, level):
        return f"{obj.__module__}.{obj.__qualname__}"

    repr_function = repr_type

    def repr_instance(self, obj, level):
        if type(obj).__repr__ is object.__repr__ and hasattr(obj, "get_params"):
            defaults = signature_defaults(type(obj).__init__)
            changed = {k: v for k, v in obj.get_params(deep=False).items()
                       if k not in defaults or repr(v) != repr(defaults[k])}
            args = ", ".join(f"{k}={self.repr1(v, level - 1)}" for k, v in changed.items())
            return f"{type(obj).__name__}({args})"
        return super().repr_instance(obj, level)


def constructor_defaults(cls) -> dict:
    """Every constructor parameter of ``cls``, its own and skorch's, with its default there."""
    skorch_params = signature_defaults(NeuralNet.__init__, NeuralNetClassifier.__init__)
    return {**skorch_params, **SKORCH_DEFAULTS, **signature_defaults(cls.__init__)}


class ParamsMixin:
    """scikit-learn's parameter plumbing of the estimators: ``get_params`` lists the
    constructor's parameters (this class's and skorch's) and the nested ones that are set
    (``optimizer__momentum``...), ``repr`` those that differ from their defaults."""

    @classmethod
    def _constructor_defaults(cls) -> dict:
        """Every constructor parameter, this class's and skorch's, with its default here."""
        return constructor_defaults(cls)

    def _get_param_names(self):
        # skorch's own version lists every attribute not ending in "_", bookkeeping included.
        nested = [k for k in vars(self) if "__" in k and not k.startswith("_") and not k.endswith("_")]
        return sorted({*signature_defaults(NeuralNet.__init__, NeuralNetClassifier.__init__, type(self).__init__),
                       *nested})

    def _get_params_callbacks(self, deep=True):
        # The built-in callbacks (timer, schedule, scores, progress bar, log) are set through
        # this estimator's own parameters: get_params(deep=True) lists only a user's
        # callbacks. set_params still reaches every one (callbacks__print_log=None).
        builtin = {f"callbacks__{name}" for name, _ in self._default_callbacks}
        return {key: value for key, value in super()._get_params_callbacks(deep=deep).items()
                if "__".join(key.split("__")[:2]) not in builtin}

    def __repr__(self):
        # The parameters that differ from their defaults, this class's own first (in the
        # order of its signature), each value's repr kept short.
        defaults = self._constructor_defaults()
        changed = {k: v for k, v in self.get_params(deep=False).items()
                   if k not in defaults or defaults[k] is inspect.Parameter.empty or repr(v) != repr(defaults[k])}
        order = list(signature_defaults(type(self).__init__))
        keys = sorted(changed, key=lambda k: (order.index(k) if k in order else len(order), k))
        formatter = _ParamRepr()
        return f"{type(self).__name__}({', '.join(f'{k}={formatter.repr(changed[k])}' for k in keys)})"
