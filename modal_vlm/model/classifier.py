"""``ClipPromptClassifier``: prompt tuning of a frozen CLIP-like model as a scikit-learn
classifier (skorch), ready for modAL."""
from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
import torch
from skorch import NeuralNetClassifier
from skorch.dataset import Dataset
from sklearn.utils import check_random_state
from torch.utils.data import Dataset as TorchDataset

from ..compat import patch_modal
from ..embeddings.inputs import as_image_items, n_images
from ..sentinels import UNLABELED
from . import _params, _state
from ._encoders import FrozenEncodersMixin
from ._labels import check_classes, check_targets, class_accuracy, encode_labels
from ._params import ParamsMixin
from ._state import LearnedStateMixin
from ._tags import image_classifier_tags
from .fit_modes import get_fit_mode, trains_visual_norm
from .schedule import AUTO_EPOCHS, default_callbacks, shot_schedule_epochs, stopped_early
from .training_data import dataset_labels

#: The PCB/CEC protocol's CoOp learner (:doc:`/algorithms`) as parameters:
#: ``ClipPromptClassifier(class_names, **COOP_PROTOCOL)`` trains exactly as the field's
#: reference harness does (16 class-specific contexts from N(0, 0.02), SGD 0.002, batch 32,
#: 200 epochs, every one of them, warm-up then cosine), whatever the estimator's own defaults.
COOP_PROTOCOL = {
    "n_ctx": 16, "class_specific_ctx": True, "ctx_init": None, "lambda_kg": 0.0, "max_epochs": 200,
    "n_iter_no_change": None, "lr": 0.002, "batch_size": 32,
    "warmup_epochs": 1, "warmup_lr": 1e-5, "optimizer": torch.optim.SGD,
    "optimizer__momentum": 0.9, "optimizer__weight_decay": 5e-4,
}


class ClipPromptClassifier(FrozenEncodersMixin, LearnedStateMixin, ParamsMixin, NeuralNetClassifier):
    """Prompt-tuned CLIP-like classifier (CoOp) with scikit-learn's and modAL's interface.

    The encoders stay frozen; only the prompt's context vectors are trained. Each image is
    encoded once (cached). Before ``fit`` it predicts zero-shot, so modAL can query without
    labels. In depth, with each default's reason: :doc:`/estimator`; ``fit``, ``set_params``
    and pickling: :doc:`/contracts`; the papers: :doc:`/algorithms`.

    Parameters
    ----------
    class_names : list of str
        The classes; ``y`` holds entries of it or indices into it.
    model_name : str, default="ViT-B-32"
        A backbone of :func:`modal_vlm.backbones.list_backbones` (open_clip or offline).
    pretrained : str, optional
        open_clip tag, local weights file or ``"random"``; None: the model's default.
    n_ctx : int, default=16
        Learned context vectors when they start from noise (CoOp's 16).
    class_specific_ctx : bool, default=True
        One context per class (CoOp's CSC).
    ctx_init : str or None, default="template"
        The initial context: the template's words (zero-shot), a text, or None (CoOp's noise).
    template : str, default="a photo of a {}."
        The zero-shot prompt: one ``{}`` where the class name goes.
    lambda_kg : float, default=8.0
        Weight of KgCoOp's pull towards the zero-shot text features (the authors' 8); 0: CoOp.
    image_size : int, optional
        Input resolution of the image encoder; None: the model's own.
    max_epochs : int or "auto", default="auto"
        Epochs per ``fit``; ``"auto"``: by labels per class (:func:`~modal_vlm.model.schedule.shot_schedule_epochs`).
    n_iter_no_change : int or None, default=5
        Stop after this many epochs without progress (``benchmarks/results/learners.md``).
    tol : float, default=0.01
        The relative fall of the training loss that counts as progress.
    lr : float, default=0.01
        SGD learning rate after the warm-up, cosine-annealed (CoOp); why: ``benchmarks/results/learners.md``.
    batch_size : int, default=128
        Labeled samples per step (-1: all); larger ones train faster (``benchmarks/results/learners.md``).
    warmup_epochs : int, default=1
        Epochs at ``warmup_lr`` first (CoOp's recipe); 0: none.
    warmup_lr : float, default=1e-5
        Learning rate of the warm-up.
    encode_batch_size : int, default=64
        Images per image-encoder forward pass.
    encode_dtype : {None, "float32", "bfloat16", "float16"}, default=None
        Precision of the encoder (None: float32); mixed precision is faster.
    jpeg_draft : bool, default=True
        Decode large JPEG files at a reduced size: far less CPU, embeddings nearly unchanged.
    encode_workers : int, optional
        Threads that decode images ahead of the encoder; None: one per core (at most 8).
    cache_dir : str or path-like, optional
        Also keep embeddings on disk here, for later processes.
    device : str, default="cpu"
        Torch device of the backbone and the prompt.
    random_state : int, RandomState or None, default=None
        Seeds the context initialisation and the batch order: equal seeds, equal fits.
    warm_start : bool, default=False
        ``fit`` continues the current prompt; False: a fresh prompt (the protocol's).
    verbose : int, default=1
        0: silent; 1: progress bars; 2: skorch's per-epoch table as well.
    fit_mode : {"supervised", "ueo", "infomax"}, default="supervised"
        ``"ueo"`` adds UEO's loss on unlabeled samples; ``"infomax"`` is it unweighted.
    lambda_ueo : float, default=1.0
        Weight of the unlabeled term.
    ueo_temperature : float, default=1.0
        Temperature of UEO's sample weights (the authors' 1.0).
    train_visual_norm : bool or "auto", default="auto"
        Also train the image encoder's normalisation layers (``"auto"``: in the UEO modes).
    unlabeled_batch_size : int, default=64
        Unlabeled samples per step in the UEO modes.
    ood_score : {"max_cosine", "max_probability"}, default="max_cosine"
        The :meth:`score_samples` score; why the cosine: ``benchmarks/results/open_set.md``.
    **kwargs
        Any other skorch parameter (``optimizer``, ``callbacks``, ``train_split``...).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The labels of ``predict``: ``class_names`` after a fit on names, else indices.
    module_ : PromptedCLIP
        The prompt learner and the frozen text tower.
    backbone_ : modal_vlm.backbones.Backbone
        The frozen encoders, loaded on first access and shared between estimators.
    history_ : skorch.history.History
        skorch's per-epoch record of the last ``fit``.
    fit_epochs_ : int
        Epochs scheduled by the last ``fit`` or ``partial_fit``.

    See Also
    --------
    COOP_PROTOCOL : The field's reference recipe as parameters.
    modal_vlm.cec_query : CEC, the query strategy this classifier was built for.
    modal_vlm.get_strategy : Query strategies by name.

    Examples
    --------
    >>> import numpy as np
    >>> clf = ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit", n_ctx=2,
    ...                            max_epochs=2, random_state=0, verbose=0)
    >>> X = np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    >>> clf.predict_proba(X).shape          # zero-shot, before any label
    (6, 2)
    >>> clf.fit(X, [0, 1, 0, 1, 0, 1]).predict(X).shape
    (6,)
    """

    #: Name of the training progress bar.
    PROGRESS_LABEL = "training prompt"

    def __init__(self, class_names, *, model_name="ViT-B-32", pretrained=None, n_ctx=16,
                 class_specific_ctx=True, ctx_init="template", template="a photo of a {}.",
                 lambda_kg=8.0, image_size=None, max_epochs="auto", n_iter_no_change=5, tol=0.01, lr=0.01,
                 batch_size=128, warmup_epochs=1, warmup_lr=1e-5, encode_batch_size=64,
                 encode_dtype=None, jpeg_draft=True,
                 encode_workers=None, cache_dir=None, device="cpu",
                 random_state=None, warm_start=False, verbose=1, fit_mode="supervised",
                 lambda_ueo=1.0, ueo_temperature=1.0, train_visual_norm="auto",
                 unlabeled_batch_size=64, ood_score="max_cosine", **kwargs):
        super().__init__(**{**_params.skorch_defaults(kwargs), **kwargs}, max_epochs=max_epochs, lr=lr,
                         batch_size=batch_size, device=device, warm_start=warm_start, verbose=verbose)
        self.class_names = class_names
        self.model_name = model_name
        self.pretrained = pretrained
        self.n_ctx = n_ctx
        self.class_specific_ctx = class_specific_ctx
        self.ctx_init = ctx_init
        self.template = template
        self.lambda_kg = lambda_kg
        self.image_size = image_size
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.warmup_epochs = warmup_epochs
        self.warmup_lr = warmup_lr
        self.encode_batch_size = encode_batch_size
        self.encode_dtype = encode_dtype
        self.jpeg_draft = jpeg_draft
        self.encode_workers = encode_workers
        self.cache_dir = cache_dir
        self.random_state = random_state
        self.fit_mode = fit_mode
        self.lambda_ueo = lambda_ueo
        self.ueo_temperature = ueo_temperature
        self.train_visual_norm = train_visual_norm
        self.unlabeled_batch_size = unlabeled_batch_size
        self.ood_score = ood_score

    # -- predictions ------------------------------------------------------------------------

    @property
    def classes_(self):
        if self.classes is not None:
            return np.asarray(self.classes)
        if getattr(self, "_labels_by_name", False):
            return np.asarray(self.class_names)
        return np.arange(len(self.class_names))

    def score_samples(self, X) -> np.ndarray:
        """In-distribution score (``ood_score``); higher = more likely one of the classes.

        Parameters
        ----------
        X : images
            Paths, PIL images, uint8 arrays or preprocessed tensors.

        Returns
        -------
        ndarray of float32 of shape (n_samples,)
            Cosines, or probabilities (``ood_score="max_probability"``).

        Examples
        --------
        >>> import numpy as np
        >>> clf = ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit", verbose=0)
        >>> X = np.zeros((3, 32, 32, 3), dtype=np.uint8)
        >>> cosine = clf.transform(X) @ clf.class_text_features().T
        >>> bool(np.allclose(clf.score_samples(X), cosine.max(axis=1), atol=1e-6))
        True
        """
        self.check_params()
        if self.ood_score == "max_probability":
            return self.predict_proba(X).max(axis=1)
        features = self.transform(X)
        return (features @ self.class_text_features().T).max(axis=1).astype(np.float32)

    def predict(self, X) -> np.ndarray:
        """Predicted labels, entries of ``classes_``.

        Parameters
        ----------
        X : images
            Paths, PIL images, uint8 arrays or preprocessed tensors.

        Returns
        -------
        ndarray of shape (n_samples,)
            ``classes_[predict_proba(X).argmax(axis=1)]``.
        """
        return self.classes_[self._predict_indices(X)]

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy on the images of the classes (``y`` as names or indices; NONE left out).

        Parameters
        ----------
        X : images
            Paths, PIL images, uint8 arrays or preprocessed tensors.
        y : array-like of shape (n_samples,)
            True labels.
        sample_weight : array-like of shape (n_samples,), optional
            Sample weights.

        Returns
        -------
        float
            The (weighted) fraction of correct predictions.
        """
        return class_accuracy(encode_labels(y, self.class_names), self._predict_indices(X), sample_weight)

    def _predict_indices(self, X) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)

    # -- scikit-learn conventions -----------------------------------------------------------

    def __sklearn_tags__(self):
        return image_classifier_tags(super().__sklearn_tags__())  # images in, zero-shot before labels

    # -- skorch hooks -----------------------------------------------------------------------

    def _seed(self):
        if self.random_state is None:
            return None
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _generator(self):
        seed = self._seed()
        return None if seed is None else torch.Generator().manual_seed(seed)

    def check_params(self):
        """Raise :class:`~modal_vlm.exceptions.InvalidParameterError` for an invalid parameter;
        cheap (loads nothing): the runner's pre-check, run once by ``fit``."""
        _params.validate(self)

    def _check_prediction_params(self):
        # Batch sizes and encoding settings may have changed since the fit (set_params); a
        # fit in progress checked every parameter already.
        if not vars(self).get("_in_transaction_"):
            _params.validate(self, _params.PREDICTION_TIME_PARAMS)

    def _fit_mode(self):
        return get_fit_mode(self.fit_mode)

    def _module_params(self) -> dict:
        """The parameters ``module_`` is built from (compared by ``set_params`` and warm starts)."""
        return {"class_names": list(self.class_names), "model_name": self.model_name,
                "pretrained": self.pretrained, "image_size": self.image_size, "device": str(self.device),
                "n_ctx": self.n_ctx, "class_specific_ctx": self.class_specific_ctx, "ctx_init": self.ctx_init,
                "template": self.template, "train_visual_norm": trains_visual_norm(self),
                **self.get_params_for("module")}

    def initialize_module(self):
        if not vars(self).get("_in_transaction_"):  # a fit validated the parameters already
            self.check_params()
        kwargs = self.get_params_for("module")
        module = self.initialized_instance(self.module, {
            "backbone": self.backbone_, "class_names": list(self.class_names), "n_ctx": self.n_ctx,
            "class_specific_ctx": self.class_specific_ctx, "ctx_init": self.ctx_init,
            "template": self.template, "generator": self._generator(),
            "train_visual_norm": trains_visual_norm(self), **kwargs,
        })
        self.module_ = module.to(self.device)
        self.module_params_ = self._module_params()
        return self

    def get_all_learnable_params(self):
        # The frozen encoders sit inside module_; only the prompt context is learned.
        for name, param in super().get_all_learnable_params():
            if param.requires_grad:
                yield name, param

    @property
    def _default_callbacks(self):
        return default_callbacks(self)

    def _print_log(self, text):
        if self.verbose >= 2:
            print(text)

    def set_params(self, **params):
        """Set parameters; rebuilds at once what the new values change (:doc:`/contracts`).

        Parameters
        ----------
        **params
            Parameter names and values.

        Returns
        -------
        ClipPromptClassifier
            ``self``.
        """
        super().set_params(**params)
        _state.rebuild_for(self, params)
        return self

    def check_data(self, X, y):
        self._fit_mode().check_labels(check_targets(n_images(X), y, self.class_names))

    def get_dataset(self, X, y=None):
        if isinstance(X, TorchDataset):  # ours (TrainingSet, embeddings) or a split of one
            return X
        if y is None:
            self.check_is_fitted()
            return Dataset(self.transform(X), None)
        # Training data depend on the parameters only, not on module_: fit builds them (and
        # so reads and encodes every image) before it re-initialises anything.
        return self._fit_mode().training_set(self, X, encode_labels(y, self.class_names))

    def get_iterator(self, dataset, training=False):
        if not training:
            self._check_prediction_params()
            return super().get_iterator(dataset, training=training)
        kwargs = {k: v for k, v in self.get_params_for("iterator_train").items()
                  if k not in ("batch_size", "shuffle", "generator", "sampler")}
        sampler = self._fit_mode().batch_sampler(self, dataset)
        return self.iterator_train(dataset, batch_sampler=sampler, **kwargs)

    def infer(self, x, **fit_params):
        if isinstance(x, Mapping):  # a TrainingSet batch: the input and UEO's sample weights
            x = x["x"]
        return super().infer(x, **fit_params)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """Cross-entropy, plus the UEO modes' unlabeled term and KgCoOp's drift (:doc:`/estimator`)."""

        loss = self._fit_mode().data_loss(self, y_pred, y_true, X,
                                          functools.partial(super().get_loss, X=X, training=training))
        if training and self.lambda_kg:
            loss = loss + self.lambda_kg * self.module_.prompt_drift()
        return loss

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        self.module_.prompt_trained.fill_(True)  # from now on predictions use the learned prompt
        return super().on_epoch_begin(net, dataset_train=dataset_train, dataset_valid=dataset_valid, **kwargs)

    # -- scikit-learn API -------------------------------------------------------------------

    def fit(self, X, y, X_unlabeled=None, **fit_params):
        """Train the prompt on labeled images (re-initialised unless ``warm_start``); all or nothing.

        Parameters
        ----------
        X : images
            Paths, PIL images, uint8 arrays or preprocessed tensors.
        y : array-like of shape (n_samples,)
            Names or indices; -1: unlabeled (UEO modes); :data:`modal_vlm.NONE`: no class.
        X_unlabeled : images, optional
            More unlabeled images (UEO modes), e.g. the pool.
        **fit_params
            Passed on to skorch's ``fit``.

        Returns
        -------
        ClipPromptClassifier
            ``self``.
        """
        self.check_params()
        self.check_data(X, y)
        mode = self._fit_mode()
        with _state.labels_of(self, y):
            y = encode_labels(y, self.class_names)
            if X_unlabeled is not None and n_images(X_unlabeled):
                mode.check_unlabeled_input()
                X = as_image_items(X) + as_image_items(X_unlabeled)
                y = np.concatenate([y, np.full(n_images(X_unlabeled), UNLABELED, dtype=np.int64)])
            with _state.all_or_nothing(self):
                dataset = self.get_dataset(X, y)  # reads and encodes every image: bad ones fail here
                if mode.learns_nothing(dataset.labels):
                    return self._fit_without_classes()
                if self.warm_start:
                    _state.rebuild_if_changed(self)  # continuing needs a module of the current parameters
                else:
                    vars(self).pop("_pending_state_", None)  # a fresh prompt replaces any saved one
                return super().fit(dataset, dataset.labels.numpy(), **fit_params)

    def _fit_without_classes(self):
        """A supervised fit on "none" labels only: the zero-shot model (:doc:`/estimator`)."""
        if not self.warm_start or not self.initialized_:
            vars(self).pop("_pending_state_", None)
            self.initialize()
        self.fit_epochs_ = 0
        return self

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        """Continue training the current prompt: a warm restart of the schedule.

        Parameters
        ----------
        X : images or Dataset
            Paths, PIL images, uint8 arrays or preprocessed tensors.
        y : array-like of shape (n_samples,)
            Names or indices (-1: unlabeled, UEO modes).
        classes : array-like, optional
            The classes ``y`` may hold (names or indices).
        **fit_params
            Passed on to skorch's ``partial_fit``.

        Returns
        -------
        ClipPromptClassifier
            ``self``.
        """
        if classes is not None:
            check_classes(classes, self.class_names)
        if not vars(self).get("_in_transaction_"):  # fit validated the parameters already
            self.check_params()
        with _state.labels_of(self, y), _state.all_or_nothing(self):
            if y is not None and not isinstance(X, TorchDataset):
                self.check_data(X, y)
                y = encode_labels(y, self.class_names)
            self._resolve_epochs(X, y)
            super().partial_fit(X, y, **fit_params)
            interrupted = vars(self).pop("_interrupted_", None)
            if interrupted is not None:
                raise interrupted  # skorch's partial_fit swallows Ctrl-C and returns
        return self

    def _resolve_epochs(self, X, y) -> None:
        """``fit_epochs_`` before skorch's ``on_train_begin`` (the schedule reads it)."""
        epochs = self.max_epochs
        if epochs == AUTO_EPOCHS:
            labeled = int(np.sum(np.asarray(y if y is not None else dataset_labels(X)) >= 0))
            epochs = shot_schedule_epochs(labeled, len(self.class_names), self._fit_mode().shot_schedule)
        self.fit_epochs_ = int(epochs)

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        if epochs is not None:
            self.fit_epochs_ = int(epochs)
        seed = self._seed()
        try:
            # torch's global generator drives the augmentation of the images trained through
            # the encoder (train_visual_norm): seeded here, a fit with random_state
            # reproduces whatever ran before it, and the caller's generator is left alone.
            with torch.random.fork_rng(devices=[]):
                if seed is not None:
                    torch.manual_seed(seed)
                return super().fit_loop(X, y, epochs=self.fit_epochs_, **fit_params)
        except KeyboardInterrupt as exc:
            if not stopped_early(self.callbacks_):  # skorch's EarlyStopping ends training this way too
                self._interrupted_ = exc  # raised again by partial_fit, after skorch's on_train_end
            raise


# modAL learners wrap this estimator, however it was imported: their teach must be patched.
patch_modal()
