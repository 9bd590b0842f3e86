"""``ClipPromptClassifier``: prompt tuning of a frozen CLIP-like model as a scikit-learn
classifier (skorch), ready for modAL."""
from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping

import numpy as np
import torch
from skorch import NeuralNetClassifier
from skorch.dataset import Dataset
from sklearn.metrics import accuracy_score
from sklearn.utils import TransformerTags, check_random_state
from torch.utils.data import Dataset as TorchDataset

from ..backbones import get_backbone
from ..embeddings.cache import EmbeddingCache
from ..compat import patch_modal
from ..embeddings.encoding import embedding_key, embedding_width, encode_images
from ..embeddings.inputs import as_image_items, n_images
from ..sentinels import NONE, UNLABELED
from . import _params, _state
from ._labels import check_classes, check_targets, encode_labels
from ._params import ParamsMixin
from ._state import LearnedStateMixin
from .fit_modes import get_fit_mode
from .schedule import (AUTO_EPOCHS, COOP_SHOT_SCHEDULE, SHOT_SCHEDULE, default_callbacks, shot_schedule_epochs,
                       stopped_early)
from .training_data import dataset_labels

#: The PCB/CEC protocol's CoOp learner (``shared/specs/protocol.md``) as parameters:
#: ``ClipPromptClassifier(class_names, **COOP_PROTOCOL)`` trains exactly as the field's
#: reference harness does (16 class-specific contexts from N(0, 0.02), SGD 0.002, batch 32,
#: 200 epochs, every one of them, warm-up then cosine), whatever the estimator's own defaults.
COOP_PROTOCOL = {
    "n_ctx": 16, "class_specific_ctx": True, "ctx_init": None, "lambda_kg": 0.0, "max_epochs": 200,
    "n_iter_no_change": None, "lr": 0.002, "batch_size": 32,
    "warmup_epochs": 1, "warmup_lr": 1e-5, "optimizer": torch.optim.SGD,
    "optimizer__momentum": 0.9, "optimizer__weight_decay": 5e-4,
}


class ClipPromptClassifier(LearnedStateMixin, ParamsMixin, NeuralNetClassifier):
    """Prompt-tuned CLIP-like classifier (CoOp) with scikit-learn's and modAL's interface.

    The image and text encoders stay frozen; only the prompt's context vectors are trained.
    Each image is encoded once: embeddings are cached by content and backbone, and reused by
    ``fit``, ``predict_proba``, ``transform``, later rounds and ``clone``\\ d estimators.
    Before ``fit`` the classifier predicts zero-shot from ``template`` prompts, so an
    ``ActiveLearner`` without initial labels can query (cold start).

    Parameters
    ----------
    class_names : list of str
        The classes. ``y`` holds entries of this list or indices into it; predictions are
        what ``fit`` was given (see ``classes_``).
    model_name : str, default="ViT-B-32"
        A backbone from :func:`modal_vlm.backbones.list_backbones`: any open_clip
        architecture, the offline reference models (``"linear-conse-efficientnet-lite0-minilm"``,
        ``"conse-efficientnet-lite0-minilm"``), or the tiny test models. Loaded on first use,
        once per process.
    pretrained : str, optional
        open_clip tag (``"openai"``), local weights file, or ``"random"``; None takes the
        model's default (``"openai"`` for ViT-B-32).
    n_ctx : int, default=16
        Number of learned context vectors when they start from N(0, 0.02) (``ctx_init=None``,
        or a template without words before ``{}``); otherwise the initial text's token count.
    class_specific_ctx : bool, default=True
        One context per class (CoOp's CSC).
    ctx_init : str or None, default="template"
        Where the context starts: ``"template"`` takes the words of ``template`` before
        ``{}`` ("a photo of a"), so training starts exactly at the zero-shot prompt; any
        other text starts from that text's tokens; None is CoOp's N(0, 0.02) noise (see
        :data:`COOP_PROTOCOL`), which with few labels falls well below zero-shot.
    template : str, default="a photo of a {}."
        Zero-shot prompt used before the first ``fit``: exactly one ``{}``, where the class
        name goes (literal braces as ``{{`` and ``}}``). Its text after ``{}`` also follows
        the class name in the learned prompts.
    lambda_kg : float, default=8.0
        Weight of KgCoOp's regulariser (Yao et al., CVPR 2023; the authors' 8), which keeps
        the learned class text features near the zero-shot ones: the loss is
        ``CE + lambda_kg * mean_c (1 - cos(t_c, t_c^zero_shot))``; 0 is plain CoOp.
    image_size : int, optional
        Input resolution of the image encoder; None keeps the model's own.
    max_epochs : int or "auto", default="auto"
        Training epochs of every ``fit`` (at most: see ``n_iter_no_change``); an epoch passes
        once over the labeled samples. ``"auto"`` is a schedule by labels per class ``k``:
        3 epochs for ``k <= 1`` (longer fell below zero-shot), 50 for ``k <= 4``, 80 above
        (CoOp's 50/100/200 shortened; the UEO modes keep CoOp's; why:
        :func:`~modal_vlm.model.schedule.shot_schedule_epochs`; ``fit_epochs_`` holds the
        number scheduled, ``len(history_)`` the number run).
    n_iter_no_change : int or None, default=5
        Stop a ``fit`` once the training loss has not fallen by ``tol`` (relative to its best)
        in this many epochs in a row (:class:`~modal_vlm.model.schedule.TrainLossPlateau`, as
        scikit-learn's ``MLPClassifier``); None runs every scheduled epoch. Why the default:
        ``benchmarks/results/learners.md``.
    tol : float, default=0.01
        The relative fall of the training loss that counts as progress.
    lr : float, default=0.01
        Learning rate of the SGD optimizer (momentum 0.9 and weight decay 5e-4 through
        ``optimizer__momentum`` and ``optimizer__weight_decay``; another ``optimizer`` starts
        from its own defaults) after the warm-up, annealed by CoOp's cosine schedule over
        every ``fit`` and ``partial_fit`` (0 is valid: only the warm-up trains; see
        :class:`~modal_vlm.model.schedule.WarmupCosineLR` and :doc:`/contracts`). 0.01 with the
        shorter ``"auto"`` schedule (``benchmarks/results/learners.md``).
    batch_size : int, default=128
        Labeled samples per training step (and images per prediction batch); -1 puts
        them all in one batch, as in skorch. A step's cost is the text encoder's, whatever
        the batch, so fewer, larger batches train faster (``benchmarks/results/learners.md``).
    warmup_epochs : int, default=1
        Epochs at the constant ``warmup_lr`` before the cosine schedule starts (CoOp's
        recipe); 0 disables the warm-up.
    warmup_lr : float, default=1e-5
        Learning rate during the warm-up epochs.
    encode_batch_size : int, default=64
        Images per image-encoder forward pass.
    encode_dtype : {None, "float32", "bfloat16", "float16"}, default=None
        Precision of the image encoder when it encodes images for the cache: None
        (float32), or mixed precision under ``torch.autocast`` (bfloat16 on CPUs with
        native support, float16 or bfloat16 on GPUs): faster, embeddings slightly changed
        (see :doc:`/performance`), cached under their own key.
    jpeg_draft : bool, default=True
        Decode JPEG files at least 6 times larger than the model's input at a reduced size
        (libjpeg's DCT scaling), keeping at least 3 times the backbone's resize size on the
        shorter side: far less CPU for large photos, embeddings nearly unchanged (see
        :doc:`/performance`); cached under their own key. False decodes at full size.
    encode_workers : int, optional
        Threads that decode and preprocess images while the encoder runs; None: one per
        CPU core (at most 8); 0: decode in the calling thread. Embeddings do not depend on it.
    cache_dir : str or path-like, optional
        Also keep embeddings on disk here, for later processes (see
        :class:`modal_vlm.embeddings.cache.EmbeddingCache`). Embeddings are keyed by the image's content,
        so a file rewritten in place is encoded again, also when its size and mtime were kept
        (``cp -p``, ``rsync -t``: its inode or ctime changed). A damaged shard is set aside
        with a warning and its images encoded again; a full disk keeps the embeddings in
        memory, with a warning.
    device : str, default="cpu"
        Torch device of the backbone and the prompt (``"cuda"``, ``"cuda:1"``, ``"mps"``...).
        Estimators on the same device share one loaded backbone.
    random_state : int, RandomState or None, default=None
        Seeds the context initialisation and the mini-batch order: equal seeds give equal
        fits.
    warm_start : bool, default=False
        ``fit`` re-initialises the prompt (the protocol's fresh prompt per round) unless True.
    verbose : int, default=1
        0: silent; 1: progress bars for encoding and training when they take over 2 s
        (on a terminal only); 2: skorch's per-epoch table as well.
    fit_mode : {"supervised", "ueo", "infomax"}, default="supervised"
        ``"ueo"`` adds UEO's loss on unlabeled samples (Liang et al., ICML 2024):
        ``CE(labeled) + lambda_ueo * L_ueo(unlabeled)``, one labeled and one unlabeled batch
        per step; without labels it is UEO's unsupervised fine-tuning. ``"infomax"`` is the
        same with equal sample weights. Unlabeled samples come as ``y == -1`` (scikit-learn's
        semi-supervised convention) and/or ``fit(..., X_unlabeled=...)`` (modAL:
        ``learner.teach(X, y, X_unlabeled=X_pool)``).
    lambda_ueo : float, default=1.0
        Weight of the unlabeled term.
    ueo_temperature : float, default=1.0
        ``T`` of UEO's sample weights ``max_c softmax(cos / T)`` (the authors' 1.0).
    train_visual_norm : bool or "auto", default="auto"
        Also train the affine parameters of the image encoder's normalisation layers ("auto":
        in the UEO modes). Images then go through the encoder, with augmentation, in every
        epoch (the slow path on a CPU); embeddings of the adapted encoder are cached under
        their own key, so nothing stale is served.
    unlabeled_batch_size : int, default=64
        Unlabeled samples per step in the UEO modes.
    ood_score : {"max_cosine", "max_probability"}, default="max_cosine"
        The in-distribution score of :meth:`score_samples`: the largest cosine similarity
        between the image and a class's text feature (the maximum logit over
        ``logit_scale``), or the maximum softmax probability (the UEO paper's score). The
        cosine separates images of none of the classes far better, also after training
        (``benchmarks/results/open_set.md``).
    **kwargs
        Any other skorch parameter (``optimizer``, ``optimizer__momentum``, ``callbacks``,
        ``train_split``, ``iterator_train__num_workers``...). ``train_split=ValidSplit(...)``
        holds out labeled samples and records ``valid_loss`` and ``valid_acc`` per epoch.
        skorch's ``classes`` must be None, ``class_names`` (predictions are then names from
        the start) or ``range(len(class_names))`` (always indices).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The labels of ``predict``, in the order of ``predict_proba``'s columns: ``class_names``
        after a ``fit`` whose ``y`` held names, else ``arange(len(class_names))`` (also
        before any ``fit``); fixed by ``classes`` where given. ``score`` accepts either kind
        of ``y``.
    module_ : PromptedCLIP
        The prompt learner with the frozen text tower (and, when ``train_visual_norm`` is
        in effect, the image encoder with its trainable normalisation layers). Created by
        ``initialize``, which ``fit`` and the first prediction call.
    backbone_ : modal_vlm.backbones.Backbone
        The frozen image and text encoders, loaded on first access and shared by every
        estimator with the same ``model_name``, ``pretrained``, ``device`` and
        ``image_size``.
    history_ : skorch.history.History
        skorch's per-epoch record of the last ``fit`` (``train_loss``, ``dur``...).
    fit_epochs_ : int
        Epochs of the last ``fit`` or ``partial_fit`` (``max_epochs``, or what ``"auto"``
        resolved to).

    Notes
    -----
    ``fit`` and ``partial_fit`` are all or nothing; ``set_params`` of a parameter the
    predictions depend on rebuilds the model at once, keeping the learned prompt where it
    applies; a pickle holds what was learned, not the frozen encoders. :doc:`/contracts`
    ("The estimator's state") says how each works.

    See Also
    --------
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

    # -- the frozen model and its embeddings ------------------------------------------------

    @property
    def backbone_(self):
        return get_backbone(self.model_name, self.pretrained, self.device, self.image_size)

    def transform(self, X) -> np.ndarray:
        """L2-normalised image embeddings ``(n, D)`` of the frozen image encoder (cached).

        Parameters
        ----------
        X : images
            Paths, PIL images, uint8 arrays or preprocessed tensors (see :mod:`modal_vlm.embeddings.inputs`).

        Returns
        -------
        ndarray of float32 of shape (n_samples, D)
            One row per image, unit L2 norm. After a UEO fit that adapted the encoder's
            normalisation layers (``train_visual_norm``), the adapted encoder's embeddings.

        Examples
        --------
        >>> import numpy as np
        >>> clf = ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit", verbose=0)
        >>> X = np.zeros((3, 32, 32, 3), dtype=np.uint8)
        >>> F = clf.transform(X)
        >>> F.shape[0], bool(np.allclose(np.linalg.norm(F, axis=1), 1, atol=1e-5))
        (3, True)
        """
        if self.initialized_ or hasattr(self, "_pending_state_"):
            self.check_is_fitted()  # a module built from the current parameters
        backbone, visual = self.backbone_, None
        key = self._embedding_key(backbone)
        if getattr(self, "module_", None) is not None and self.module_.visual is not None:
            visual = self.module_.visual  # adapted by UEO: its own cache key
            digest = hashlib.blake2b(digest_size=8)
            for param in visual.parameters():
                if param.requires_grad:
                    digest.update(param.detach().cpu().numpy().tobytes())
            key = f"{key}|norm-adapted-{digest.hexdigest()}"
        return self._encode(backbone, X, key, visual)

    def frozen_transform(self, X) -> np.ndarray:
        """Embeddings of the frozen (zero-shot) image encoder, whatever UEO adapted.

        Parameters
        ----------
        X : images
            Paths, PIL images, uint8 arrays or preprocessed tensors.

        Returns
        -------
        ndarray of float32 of shape (n_samples, D)
            L2-normalised embeddings; equal to :meth:`transform`'s unless the image encoder
            was adapted.
        """
        backbone = self.backbone_
        return self._encode(backbone, X, self._embedding_key(backbone))

    def _embedding_key(self, backbone) -> str:
        return embedding_key(backbone, encode_dtype=self.encode_dtype, jpeg_draft=self.jpeg_draft)

    @property
    def embedding_key_(self) -> str:
        """The key the frozen encoder's embeddings are cached under (in memory and in
        ``cache_dir``): :func:`modal_vlm.embeddings.encoding.embedding_key` of the backbone and the
        encoding settings; what :meth:`modal_vlm.embeddings.EmbeddingPool.from_cache` and ``modal-vlm
        encode`` use."""
        return self._embedding_key(self.backbone_)

    def _encode(self, backbone, X, key, visual=None) -> np.ndarray:
        self._check_prediction_params()  # encode_batch_size and friends, named as the user set them
        cache = EmbeddingCache(key, self.cache_dir, width=embedding_width(backbone))
        return encode_images(backbone, X, cache=cache,
                             batch_size=self.encode_batch_size, verbose=self.verbose, visual=visual,
                             encode_dtype=self.encode_dtype, jpeg_draft=self.jpeg_draft,
                             num_workers=self.encode_workers)

    def predict_proba_from_features(self, features) -> np.ndarray:
        """Class probabilities from embeddings returned by :meth:`transform`.

        Query strategies use it to get embeddings and probabilities in one pass over the pool.

        Parameters
        ----------
        features : array-like of shape (n_samples, D)
            Image embeddings, as :meth:`transform` returns them.

        Returns
        -------
        ndarray of float32 of shape (n_samples, n_classes)
            The same probabilities as ``predict_proba`` on the images.

        Raises
        ------
        ValueError
            If ``features`` is not 2-d or holds NaN or infinite values.
        """
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2:
            raise ValueError(f"features must be 2-d (n, D), got shape {features.shape}.")
        bad = np.flatnonzero(~np.isfinite(features).all(axis=1))
        if len(bad):
            raise ValueError(f"features rows {bad[:10].tolist()} hold NaN or infinite values.")
        return super().predict_proba(Dataset(features, None))

    def class_text_features(self) -> np.ndarray:
        """The normalised class text features the classifier predicts with, ``(n_classes, D)``.

        The ``template`` prompts before the first ``fit`` (zero-shot), the learned prompts
        after; ``predict_proba`` is the softmax of ``logit_scale * transform(X) @ T.T``.

        Returns
        -------
        ndarray of float32 of shape (n_classes, D)
            One unit-norm row per class, in the order of ``class_names``.

        Examples
        --------
        >>> clf = ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit", verbose=0)
        >>> clf.class_text_features().shape
        (2, 32)
        """
        self.check_is_fitted()
        with torch.no_grad():
            return self.module_.text_features().detach().cpu().numpy().astype(np.float32)

    # -- predictions ------------------------------------------------------------------------

    @property
    def classes_(self):
        if self.classes is not None:
            return np.asarray(self.classes)
        if getattr(self, "_labels_by_name", False):
            return np.asarray(self.class_names)
        return np.arange(len(self.class_names))

    def score_samples(self, X) -> np.ndarray:
        """In-distribution score, scikit-learn's outlier-detector convention: higher = more normal.

        With ``ood_score="max_cosine"`` (the default) the largest cosine similarity between
        the image's embedding and a class's text feature (:meth:`class_text_features`);
        with ``"max_probability"`` the maximum softmax probability over the known classes.
        Either is high for an image of one of ``class_names`` and low for an
        out-of-distribution one. ``-score_samples(X)`` is an OOD score (higher = more
        likely unknown). :func:`modal_vlm.metrics.ood_metrics` takes these scores as they
        are (AUROC and FPR at 95 % TPR).

        Parameters
        ----------
        X : images
            Paths, PIL images, uint8 arrays or preprocessed tensors.

        Returns
        -------
        ndarray of float32 of shape (n_samples,)
            Cosines in ``[-1, 1]``, or probabilities in ``[1 / n_classes, 1]``.

        Examples
        --------
        >>> import numpy as np
        >>> clf = ClipPromptClassifier(["cat", "dog"], model_name="tiny-vit", verbose=0)
        >>> X = np.zeros((3, 32, 32, 3), dtype=np.uint8)
        >>> cosine = clf.transform(X) @ clf.class_text_features().T
        >>> bool(np.allclose(clf.score_samples(X), cosine.max(axis=1), atol=1e-6))
        True
        >>> clf.set_params(ood_score="max_probability")
        ... # doctest: +ELLIPSIS
        ClipPromptClassifier(...)
        >>> bool(np.all(clf.score_samples(X) == clf.predict_proba(X).max(axis=1)))
        True
        """
        self.check_params()
        if self.ood_score == "max_probability":
            return self.predict_proba(X).max(axis=1)
        features = self.transform(X)
        return (features @ self.class_text_features().T).max(axis=1).astype(np.float32)

    def predict(self, X) -> np.ndarray:
        """Predicted labels: entries of ``classes_`` (names after a fit on names).

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
        """Accuracy on ``(X, y)``; ``y`` may hold class names or indices, whatever ``fit`` had.

        Parameters
        ----------
        X : images
            Paths, PIL images, uint8 arrays or preprocessed tensors.
        y : array-like of shape (n_samples,)
            True labels: entries of ``class_names`` or indices into it. Images labeled
            :data:`modal_vlm.NONE` are left out: no class is right for them (score them with
            :meth:`score_samples` and :func:`modal_vlm.metrics.ood_metrics`).
        sample_weight : array-like of shape (n_samples,), optional
            Sample weights.

        Returns
        -------
        float
            The (weighted) fraction of correct predictions among the images of the classes.

        Raises
        ------
        ValueError
            ``y`` holds no image of the classes.
        """
        labels, predicted = encode_labels(y, self.class_names), self._predict_indices(X)
        of_a_class = labels != NONE
        if not of_a_class.any():
            raise ValueError("y holds only modal_vlm.NONE: accuracy needs images of the classes (score images of "
                             "none of the classes with score_samples and modal_vlm.metrics.ood_metrics).")
        weights = None if sample_weight is None else np.asarray(sample_weight)[of_a_class]
        return float(accuracy_score(labels[of_a_class], predicted[of_a_class], sample_weight=weights))

    def _predict_indices(self, X) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)

    # -- scikit-learn conventions -----------------------------------------------------------

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False  # zero-shot predictions before any label
        # Images in: paths (1-d, strings), grey (n, H, W) and RGB (n, H, W, 3) pixel arrays,
        # (n, 3, H, W) tensors; never a 2-d feature matrix.
        tags.input_tags.two_d_array = False
        tags.input_tags.one_d_array = tags.input_tags.three_d_array = tags.input_tags.string = True
        tags.classifier_tags.poor_score = True  # a frozen image encoder: no promise on toy data
        # transform() gives the embeddings, float32 whatever the input: a classifier with a
        # transform, not a scikit-learn transformer (no fit_transform, no set_output).
        tags.transformer_tags = TransformerTags(preserves_dtype=[])
        return tags

    # -- skorch hooks -----------------------------------------------------------------------

    def _seed(self):
        if self.random_state is None:
            return None
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _generator(self):
        seed = self._seed()
        return None if seed is None else torch.Generator().manual_seed(seed)

    def _trains_visual_norm(self) -> bool:
        if self.train_visual_norm == "auto":
            return self.fit_mode != "supervised"
        return bool(self.train_visual_norm)

    def check_params(self):
        """Raise :class:`~modal_vlm.exceptions.InvalidParameterError` for an invalid parameter:
        an unknown name, a value outside its declared constraint (``model._params``), invalid
        ``class_names`` or ``template``, a ``classes`` that is not ``class_names`` or its indices.

        ``fit`` runs it once. Cheap: it loads nothing, so callers (the experiment runner) can
        validate settings before the backbone loads.
        """
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
                "template": self.template, "train_visual_norm": self._trains_visual_norm(),
                **self.get_params_for("module")}

    def initialize_module(self):
        if not vars(self).get("_in_transaction_"):  # a fit validated the parameters already
            self.check_params()
        kwargs = self.get_params_for("module")
        module = self.initialized_instance(self.module, {
            "backbone": self.backbone_, "class_names": list(self.class_names), "n_ctx": self.n_ctx,
            "class_specific_ctx": self.class_specific_ctx, "ctx_init": self.ctx_init,
            "template": self.template, "generator": self._generator(),
            "train_visual_norm": self._trains_visual_norm(), **kwargs,
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
        """Set parameters (scikit-learn's and skorch's, nested ones included); returns ``self``.

        As skorch's ``set_params``, it rebuilds what depends on the new values at once: new
        ``class_names``, ``template``, ``model_name``, ``pretrained``, ``image_size`` or
        ``device`` on an initialised estimator rebuild ``module_`` here, keeping the learned
        prompt where it still applies; where it cannot (other classes, another backbone) it
        is dropped with a warning pointing at this call (predictions are zero-shot until the
        next ``fit``).

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
        """Cross-entropy on labeled samples, plus ``lambda_ueo`` times UEO's (or InfoMax's)
        loss on the unlabeled ones in the UEO modes, plus ``lambda_kg`` times KgCoOp's prompt
        drift in training."""

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
        """Train the prompt on labeled images (re-initialised unless ``warm_start``).

        Parameters
        ----------
        X : images
            Paths, PIL images, uint8 arrays or preprocessed tensors.
        y : array-like of shape (n_samples,)
            Entries of ``class_names`` or indices into it; -1 marks unlabeled samples (UEO
            modes); :data:`modal_vlm.NONE` (-2) marks images of none of the classes (a
            person's "none of these classes"), in every mode and beside names too. With
            names, ``predict`` returns names.

            "None" images are a label like any other for the learner and the strategies
            (:doc:`/open_set`): in the UEO modes they join UEO's unlabeled loss with the
            weight of certain out-of-distribution samples (``1 / n_classes``); a
            supervised fit has no loss term for them, and on "none" labels alone it gives
            the zero-shot model.
        X_unlabeled : images, optional
            More unlabeled images (UEO modes), e.g. the remaining active-learning pool.
        **fit_params
            Passed on to skorch's ``fit``.

        Returns
        -------
        ClipPromptClassifier
            The fitted estimator, ``self``.

        Raises
        ------
        InvalidParameterError
            An invalid parameter (:meth:`check_params`: duplicate class names, an invalid
            ``template``...), empty ``X``, a length mismatch, labels outside ``class_names``
            (a ``ValueError``, as :class:`~modal_vlm.exceptions.InvalidParameterError` is).
        ValueError
            Unreadable images, NaN pixels.
        FileNotFoundError
            A missing image file (named in the message).
        KeyboardInterrupt
            Training was interrupted (Ctrl-C).

        Notes
        -----
        All or nothing: every input is checked and encoded before anything is
        re-initialised, and whatever fails or interrupts the fit leaves the estimator as it
        was before the call.
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
        """A supervised fit on labels that are all :data:`~modal_vlm.NONE`: nothing to learn
        a class from, so the model is the zero-shot one (a fresh prompt would be untrained
        noise with ``ctx_init=None``); with ``warm_start`` it stays as it was."""
        if not self.warm_start or not self.initialized_:
            vars(self).pop("_pending_state_", None)
            self.initialize()
        self.fit_epochs_ = 0
        return self

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        """Continue training the current prompt (initialised first if needed).

        Runs ``max_epochs`` more epochs with the whole learning-rate schedule (warm-up,
        then cosine from ``lr``): a warm restart, never the previous schedule continued
        past its end. ``fit`` with ``warm_start=True`` does the same.

        Parameters
        ----------
        X : images or Dataset
            Paths, PIL images, uint8 arrays or preprocessed tensors.
        y : array-like of shape (n_samples,)
            Entries of ``class_names`` or indices into it (-1: unlabeled, UEO modes).
        classes : array-like, optional
            scikit-learn's list of the classes ``y`` may hold; if given, entries of
            ``class_names`` or indices into it (predictions still cover every class).
        **fit_params
            Passed on to skorch's ``partial_fit``.

        Returns
        -------
        ClipPromptClassifier
            ``self``.

        Raises
        ------
        ValueError
            ``classes`` naming classes outside ``class_names``, or invalid ``X`` / ``y`` (as
            in ``fit``).
        KeyboardInterrupt
            Training was interrupted (Ctrl-C); the estimator is as it was before the call.
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
        """Set ``fit_epochs_``, the epochs of this training run, before skorch's
        ``on_train_begin`` (the schedule and the progress bar read it)."""
        epochs = self.max_epochs
        if epochs == AUTO_EPOCHS:
            labels = np.asarray(y if y is not None else dataset_labels(X))
            schedule = SHOT_SCHEDULE if self.fit_mode == "supervised" else COOP_SHOT_SCHEDULE  # UEO's: unmeasured
            epochs = shot_schedule_epochs(int(np.sum(labels >= 0)), len(self.class_names), schedule)
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
