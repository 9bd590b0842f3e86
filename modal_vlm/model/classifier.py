"""``ClipPromptClassifier``: prompt tuning of a frozen CLIP-like model as a scikit-learn
classifier (skorch), ready for modAL."""
from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import reprlib
import warnings
from collections.abc import Mapping

import numpy as np
import torch
from skorch import NeuralNet, NeuralNetClassifier
from skorch.callbacks import BatchScoring, EarlyStopping, EpochScoring, EpochTimer, LRScheduler, PassthroughScoring
from skorch.dataset import Dataset
from skorch.utils import get_map_location
from sklearn.exceptions import DataConversionWarning
from sklearn.metrics import accuracy_score
from sklearn.utils import TransformerTags, check_random_state
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import Subset

from ..backbones import get_backbone
from ..cache import EmbeddingCache
from .class_names import check_class_names
from ..compat import patch_modal
from .schedule import (AUTO_EPOCHS, EpochProgressBar, TrainLossPlateau, VerbosePrintLog, WarmupCosineLR,
                        shot_schedule_epochs)
from ..encoding import check_encode_dtype, check_workers, embedding_key, embedding_width, encode_images
from ..inputs import as_image_items, n_images
from .losses import ueo_loss, ueo_sample_weights
from .prompted_clip import PromptedCLIP, check_template, zero_shot_text_features
from ..sentinels import NONE, UNLABELED, sentinel_mask
from .training_data import SemiSupervisedBatchSampler, TrainingSet

FIT_MODES = ("supervised", "ueo", "infomax")
#: Values of ``ood_score``, the score of ``score_samples``.
OOD_SCORES = ("max_cosine", "max_probability")
#: UEO's training logits use CLIP's fixed scale, whatever the backbone's own.
UEO_LOGIT_SCALE = 100.0
#: What a pickle leaves out: skorch's components, rebuilt from the parameters on load, and
#: the markers of a fit in progress (skorch's Checkpoint may pickle during training).
NOT_PICKLED = ("module_", "criterion_", "optimizer_", "callbacks_", "_in_transaction_", "_interrupted_")
#: Parameters ``module_`` is built from that a learned prompt does not depend on.
PLACEMENT_PARAMS = ("device", "template")
#: Parameters the predictions depend on: changed by ``set_params``, they rebuild ``module_``
#: before the next call. The others (``n_ctx``, ``ctx_init``...) shape training only and
#: take effect at the next ``fit``.
PREDICTION_PARAMS = ("class_names", "model_name", "pretrained", "image_size", "device", "template")

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

#: skorch parameters whose default here differs from skorch's (CoOp's recipe).
SKORCH_DEFAULTS = {
    "module": PromptedCLIP,
    "criterion": torch.nn.CrossEntropyLoss,
    "optimizer": torch.optim.SGD,
    "optimizer__momentum": 0.9,
    "optimizer__weight_decay": 5e-4,
    "train_split": None,
}


def _signature_defaults(*functions) -> dict:
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
            defaults = _signature_defaults(type(obj).__init__)
            changed = {k: v for k, v in obj.get_params(deep=False).items()
                       if k not in defaults or repr(v) != repr(defaults[k])}
            args = ", ".join(f"{k}={self.repr1(v, level - 1)}" for k, v in changed.items())
            return f"{type(obj).__name__}({args})"
        return super().repr_instance(obj, level)


def _dataset_labels(dataset) -> torch.Tensor:
    """Labels of a :class:`TrainingSet`, or of a ``Subset`` of one (a ``train_split`` part)."""
    if isinstance(dataset, Subset):
        return _dataset_labels(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    return dataset.labels


def _labeled_accuracy(net, X, y):
    """Accuracy over the samples labeled with a class (``y >= 0``): the default ``valid_acc``."""
    y = np.asarray(y)
    labeled = y >= 0
    return float(np.mean(net._predict_indices(X)[labeled] == y[labeled])) if labeled.any() else float("nan")


class ClipPromptClassifier(NeuralNetClassifier):
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
        once over the labeled samples. ``"auto"`` is the CoOp authors' few-shot schedule by
        labels per class ``k``: 50 epochs for ``k <= 1``, 100 for ``k <= 4``, 200 above
        (:func:`~modal_vlm.model.schedule.shot_schedule_epochs`; ``fit_epochs_`` holds the
        number scheduled, ``len(history_)`` the number run).
    n_iter_no_change : int or None, default=5
        Stop a ``fit`` once the training loss has not fallen by ``tol`` (relative to its best)
        in this many epochs in a row (:class:`~modal_vlm.model.schedule.TrainLossPlateau`, as
        scikit-learn's ``MLPClassifier``); None runs every scheduled epoch. At 8 labels per
        class it halves the CoOp schedule's 200 epochs with test accuracy within one std
        (``benchmarks/results/learners.md``).
    tol : float, default=0.01
        The relative fall of the training loss that counts as progress.
    lr : float, default=0.005
        Learning rate of the SGD optimizer (momentum 0.9 and weight decay 5e-4 by default,
        set through ``optimizer__momentum`` and ``optimizer__weight_decay``; another
        ``optimizer`` starts from its own defaults) after the
        warm-up, annealed by CoOp's cosine schedule: ``lr * (1 + cos(pi * t / max_epochs)) / 2``
        in the ``t``-th epoch after the warm-up (0 is valid: only the warm-up trains). Every
        ``fit`` and ``partial_fit`` runs the whole schedule from the current prompt (see
        :class:`~modal_vlm.model.schedule.WarmupCosineLR`); a ``skorch.callbacks.LRScheduler`` in
        ``callbacks`` replaces it (the rate then starts at ``lr``), and
        ``callbacks__lr_scheduler=None`` keeps ``lr`` constant.
    batch_size : int, default=128
        Labeled samples per training step (and images per prediction batch); -1 puts
        them all in one batch, as in skorch. A step's cost is the text encoder's, whatever
        the batch: 128 takes a third of CoOp's steps (32) at 80 labels for the same accuracy
        (``benchmarks/bench_learners.py``).
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
        (libjpeg's DCT scaling to 1/2, 1/4 or 1/8), keeping at least 3 times the backbone's
        resize size on the shorter side: a 12-megapixel photo decodes and resizes with about
        2.5x less CPU, its embedding at a mean cosine of 0.995 to full decoding's (offline
        model, 160 px; see :doc:`/performance`); cached under their own key. False decodes
        every file at full size.
    encode_workers : int, optional
        Threads that decode and preprocess images while the encoder runs; None: one per
        CPU core (at most 8); 0: decode in the calling thread. Embeddings do not depend on it.
    cache_dir : str or path-like, optional
        Also keep embeddings on disk here, for later processes (see
        :class:`modal_vlm.cache.EmbeddingCache`). Embeddings are keyed by the image's content,
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
        cosine separates images of none of the classes far better with the offline model,
        and stays so after training while the probability loses it: AUROC against digits
        0.84 -> 0.93 after 30 labels (semi-supervised UEO 0.93), where the probability falls
        0.67 -> 0.61 (UEO 0.63); 5 seeds, see ``benchmarks/results/open_set.md``.
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
    **All or nothing.** ``fit`` checks and encodes every input before it re-initialises
    anything, and a ``fit`` or ``partial_fit`` that fails or is interrupted (Ctrl-C raises
    ``KeyboardInterrupt``, it does not end training early) leaves the estimator exactly as it
    was. modAL's ``ActiveLearner.teach`` is all or nothing too (see :mod:`modal_vlm.compat`).

    **Parameters take effect on the next call.** After ``set_params`` the next prediction
    uses the new ``template``, ``class_names``, ``model_name``, ``pretrained``,
    ``image_size`` or ``device``. A learned prompt is kept where it still applies (a new
    ``template`` or ``device``); where it cannot (other classes, another backbone),
    predictions are zero-shot until the next ``fit``, with a warning. Training parameters
    (``n_ctx``, ``ctx_init``, ``lr``...) take effect at the next ``fit``, as in
    scikit-learn.

    **Saving.** ``pickle`` stores what was learned (the context vectors, adapted
    normalisation layers, optimizer state and history) and the parameters, not the frozen
    encoders: they are rebuilt by name (``model_name``, ``pretrained``...) on first use after
    loading, and predictions are identical. The offline model's estimator pickles to a few
    hundred kB. ``save_params(f_params=...)`` writes the same learned state (skorch's
    ``f_optimizer`` and ``f_history`` the rest), and ``load_params`` refuses a state learned
    for other classes or another backbone. If the backbone cannot be rebuilt (a local
    weights file moved), the error says so, and ``set_params(pretrained=NEW_PATH)`` recovers
    the model.

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
                 lambda_kg=8.0, image_size=None, max_epochs="auto", n_iter_no_change=5, tol=0.01, lr=0.005,
                 batch_size=128, warmup_epochs=1, warmup_lr=1e-5, encode_batch_size=64, encode_dtype=None, jpeg_draft=True,
                 encode_workers=None, cache_dir=None, device="cpu",
                 random_state=None, warm_start=False, verbose=1, fit_mode="supervised",
                 lambda_ueo=1.0, ueo_temperature=1.0, train_visual_norm="auto",
                 unlabeled_batch_size=64, ood_score="max_cosine", **kwargs):
        defaults = SKORCH_DEFAULTS
        if kwargs.get("optimizer", torch.optim.SGD) is not torch.optim.SGD:  # SGD's settings stay SGD's
            defaults = {k: v for k, v in SKORCH_DEFAULTS.items() if not k.startswith("optimizer__")}
        super().__init__(**{**defaults, **kwargs}, max_epochs=max_epochs, lr=lr,
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

    @property
    def classes_(self):
        if self.classes is not None:
            return np.asarray(self.classes)
        if getattr(self, "_labels_by_name", False):
            return np.asarray(self.class_names)
        return np.arange(len(self.class_names))

    def transform(self, X) -> np.ndarray:
        """L2-normalised image embeddings ``(n, D)`` of the frozen image encoder (cached).

        Parameters
        ----------
        X : images
            Paths, PIL images, uint8 arrays or preprocessed tensors (see :mod:`modal_vlm.inputs`).

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
        ``cache_dir``): :func:`modal_vlm.encoding.embedding_key` of the backbone and the
        encoding settings; what :meth:`modal_vlm.EmbeddingPool.from_cache` and ``modal-vlm
        encode`` use."""
        return self._embedding_key(self.backbone_)

    def _encode(self, backbone, X, key, visual=None) -> np.ndarray:
        self.check_training_params()  # encode_batch_size and friends, named as the user set them
        cache = EmbeddingCache(key, self.cache_dir, width=embedding_width(backbone))
        return encode_images(backbone, X, cache=cache,
                             batch_size=self.encode_batch_size, verbose=self.verbose, visual=visual,
                             encode_dtype=self.encode_dtype, jpeg_draft=self.jpeg_draft,
                             num_workers=self.encode_workers)

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

    def predict_ood_score(self, X) -> np.ndarray:
        """Deprecated: use :meth:`score_samples` (the same values; higher = in-distribution).

        The name suggested "higher = more out-of-distribution", the opposite of what it
        returns. Removed in 0.3.

        Parameters
        ----------
        X : images
            Paths, PIL images, uint8 arrays or preprocessed tensors.

        Returns
        -------
        ndarray of float32 of shape (n_samples,)
            :meth:`score_samples`'s in-distribution scores.
        """
        warnings.warn("predict_ood_score is deprecated and will be removed in 0.3: it returns an "
                      "in-distribution score (higher = more likely a known class). Use score_samples "
                      "(the same values), or -score_samples for an out-of-distribution score.",
                      FutureWarning, stacklevel=2)
        return self.score_samples(X)

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
        labels, predicted = self._label_indices(y), self._predict_indices(X)
        of_a_class = labels != NONE
        if not of_a_class.any():
            raise ValueError("y holds only modal_vlm.NONE: accuracy needs images of the classes (score images of "
                             "none of the classes with score_samples and modal_vlm.metrics.ood_metrics).")
        weights = None if sample_weight is None else np.asarray(sample_weight)[of_a_class]
        return float(accuracy_score(labels[of_a_class], predicted[of_a_class], sample_weight=weights))

    def _predict_indices(self, X) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)

    def _label_indices(self, y) -> np.ndarray:
        """``y`` as int64 indices into ``class_names`` (names looked up, -1 and -2 kept); raises
        ``ValueError`` for unknown names, mixed kinds and non-integer numbers."""
        # A list keeps its elements' types (np.asarray would turn [name, 1] into strings).
        y = np.array(y, dtype=object) if isinstance(y, (list, tuple)) else np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:  # a column vector (check_data warns)
            y = y.ravel()
        if y.dtype.kind in "iu" or (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
            return y.astype(np.int64)
        if y.dtype.kind not in "USO":
            kind = "continuous values" if y.dtype.kind == "f" else f"dtype {y.dtype}"
            raise ValueError(f"Unknown label type: y must hold entries of class_names or integer indices into it, "
                             f"got {kind}.")
        lookup = {name: i for i, name in enumerate(self.class_names)}
        # -1 and -2 (UNLABELED, NONE) may stand beside names, as numbers or as the text NumPy
        # makes of them when modAL stacks them with names.
        sentinels = np.full(y.shape, 0, dtype=np.int64)
        for sentinel in (UNLABELED, NONE):
            sentinels[sentinel_mask(y, sentinel, self.class_names)] = sentinel
        is_name = np.array([isinstance(v, str) for v in y.ravel()], dtype=bool).reshape(y.shape) & (sentinels == 0)
        numbers = y[~is_name & (sentinels == 0)]
        if is_name.any() and numbers.size:
            raise ValueError("y mixes class names with numbers; use names (with modal_vlm.NONE for \"none of these "
                             "classes\" and -1 for unlabeled samples) or indices throughout.")
        unknown = sorted({str(v) for v in y[is_name] if v not in lookup})
        if unknown:
            raise ValueError(f"Unknown labels {unknown[:10]}: y must hold entries of class_names "
                             f"({len(self.class_names)} names) or indices into it.")
        if not is_name.any():  # an object array (or a list) of numbers
            numbers = np.asarray([int(sentinel) if sentinel else v
                                  for v, sentinel in zip(y.ravel().tolist(), sentinels.ravel())]).reshape(y.shape)
            if numbers.dtype.kind in "OUS":
                raise ValueError("Unknown label type: y must hold entries of class_names or integer indices into it.")
            return self._label_indices(numbers)
        return np.array([lookup[v] if named else int(sentinel) for v, named, sentinel
                         in zip(y.ravel(), is_name.ravel(), sentinels.ravel())], dtype=np.int64).reshape(y.shape)

    @contextlib.contextmanager
    def _labels_of(self, y):
        """Run a training call on ``y``: inside it, predictions (of scoring callbacks) are
        indices, like the training targets; after a successful call ``classes_`` is
        ``class_names`` if ``y`` held names; a failed call restores the previous state."""
        y = np.asarray(y) if y is not None else None
        by_name = y is not None and y.dtype.kind in "USO" and any(
            isinstance(v, str) and not sentinel for v, sentinel in
            zip(y.ravel(), sentinel_mask(y, UNLABELED, self.class_names) | sentinel_mask(y, NONE, self.class_names)))
        had, previous = hasattr(self, "_labels_by_name"), getattr(self, "_labels_by_name", False)
        self._labels_by_name = False
        try:
            yield
        except BaseException:
            if had:
                self._labels_by_name = previous
            else:
                del self._labels_by_name
            raise
        self._labels_by_name = by_name

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

    @classmethod
    def _constructor_defaults(cls) -> dict:
        """Every constructor parameter, this class's and skorch's, with its default here."""
        skorch_params = _signature_defaults(NeuralNet.__init__, NeuralNetClassifier.__init__)
        return {**skorch_params, **SKORCH_DEFAULTS, **_signature_defaults(cls.__init__)}

    def _get_param_names(self):
        # scikit-learn's get_params lists these. skorch's own version lists every attribute
        # not ending in "_", bookkeeping included (_params_to_validate); here: the
        # constructor's parameters and the nested ones that are set (optimizer__momentum...).
        nested = [k for k in vars(self) if "__" in k and not k.startswith("_") and not k.endswith("_")]
        return sorted({*_signature_defaults(NeuralNet.__init__, NeuralNetClassifier.__init__, type(self).__init__),
                       *nested})

    def _get_params_callbacks(self, deep=True):
        # The built-in callbacks (timer, schedule, scores, progress bar, log) are set through
        # this estimator's own parameters: get_params(deep=True) lists only a user's
        # callbacks. set_params still reaches every one (callbacks__print_log=None).
        builtin = {f"callbacks__{name}" for name, _ in self._default_callbacks}
        return {key: value for key, value in super()._get_params_callbacks(deep=deep).items()
                if "__".join(key.split("__")[:2]) not in builtin}

    def __repr__(self):
        defaults = self._constructor_defaults()
        params = self.get_params(deep=False)
        changed = {k: v for k, v in params.items()
                   if k not in defaults or defaults[k] is inspect.Parameter.empty or repr(v) != repr(defaults[k])}
        order = list(_signature_defaults(type(self).__init__))  # this class's own first, as in its signature
        keys = sorted(changed, key=lambda k: (order.index(k) if k in order else len(order), k))
        formatter = _ParamRepr()
        return f"{type(self).__name__}({', '.join(f'{k}={formatter.repr(changed[k])}' for k in keys)})"

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
        """Raise ``ValueError`` for an unknown parameter, an invalid ``template`` or
        ``n_ctx``, an unknown ``fit_mode``, an invalid UEO setting, a learning rate, batch
        size or epoch count out of range, or a ``classes`` that is not ``class_names`` or its
        indices.

        Cheap: it loads nothing, so callers (the experiment runner) can validate settings
        before the backbone loads.
        """
        # skorch checks parameter names only once initialised (after the backbone loaded).
        known = {name for cls in type(self).__mro__ if "__init__" in vars(cls)
                 for name in inspect.signature(cls.__init__).parameters}
        unknown = sorted(k for k in vars(self) if not k.startswith("_") and not k.endswith("_")
                         and "__" not in k and k not in known)
        if unknown:
            raise ValueError(f"Unknown parameter(s) {unknown} of ClipPromptClassifier; see its documentation "
                             "for the valid ones (any skorch parameter too, e.g. optimizer__momentum).")
        check_template(self.template)
        if isinstance(self.n_ctx, bool) or not isinstance(self.n_ctx, (int, np.integer)) or self.n_ctx < 1:
            raise ValueError(f"n_ctx must be an integer >= 1, got {self.n_ctx!r}.")
        self.check_training_params()
        self.check_skorch_params()
        if self.fit_mode not in FIT_MODES:
            raise ValueError(f"Unknown fit_mode {self.fit_mode!r}; use one of {FIT_MODES}.")
        if self.train_visual_norm not in ("auto", True, False):
            raise ValueError(f"train_visual_norm must be True, False or 'auto', got {self.train_visual_norm!r}.")
        if not self.ueo_temperature > 0 or self.lambda_ueo < 0:
            raise ValueError("ueo_temperature must be > 0 and lambda_ueo >= 0.")
        if not self.lambda_kg >= 0:
            raise ValueError(f"lambda_kg must be >= 0, got {self.lambda_kg!r}.")
        if self.ood_score not in OOD_SCORES:
            raise ValueError(f"Unknown ood_score {self.ood_score!r}; use one of {OOD_SCORES}.")
        check_encode_dtype(self.encode_dtype)
        check_workers(self.encode_workers)

    def check_training_params(self):
        """Raise ``ValueError`` for learning rates, batch sizes, epoch counts or stopping rules out of range."""
        for name in ("lr", "warmup_lr", "tol"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not value >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}.")
        for name, allow_all in (("batch_size", True), ("unlabeled_batch_size", True), ("encode_batch_size", False),
                                ("max_epochs", None), ("warmup_epochs", None)):
            value = getattr(self, name)
            if name == "max_epochs" and value == AUTO_EPOCHS:
                continue
            low = 0 if allow_all is None else 1
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or \
                    not (value >= low or (allow_all and value == -1)):
                rule = {None: ">= 0", True: ">= 1, or -1 for all samples in one batch", False: ">= 1"}[allow_all]
                rule += ', or "auto"' if name == "max_epochs" else ""
                raise ValueError(f"{name} must be an integer {rule}, got {value!r}.")
        patience = self.n_iter_no_change
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, (int, np.integer))
                                     or patience < 1):
            raise ValueError(f"n_iter_no_change must be an integer >= 1, or None, got {patience!r}.")

    def check_skorch_params(self):
        """Raise ``ValueError`` for a ``classes`` other than ``class_names`` or its indices, or
        scoring callbacks without skorch's prediction cache."""
        # Scoring callbacks score the predictions cached during the epoch (skorch's default);
        # without the cache they would need the targets of a skorch Dataset, which the
        # training samples (embeddings with UEO's weights) are not.
        scoring = [cb for cb in self._user_callbacks() if isinstance(cb, (EpochScoring, BatchScoring))]
        if any(not (cb.use_caching if self.use_caching == "auto" else self.use_caching) for cb in scoring) or (
                self.use_caching is False and self.train_split is not None):
            raise ValueError("Scoring callbacks need use_caching=True (skorch's default) here: they score the "
                             "predictions cached during training.")
        if self.classes is not None:
            given = list(np.asarray(self.classes).tolist())
            if given not in (list(self.class_names), list(range(len(self.class_names)))):
                raise ValueError(
                    f"classes={self.classes!r} does not match class_names: the classes are class_names. "
                    "Leave classes=None (predictions follow y), or pass class_names (predict names) "
                    "or range(len(class_names)) (predict indices).")

    def check_class_names(self):
        """Raise ``ValueError`` for empty, non-string or duplicate class names, names with
        surrounding spaces, and names that differ only in case or spacing (their prompts are
        the same: :func:`modal_vlm.model.class_names.check_class_names`)."""
        check_class_names(self.class_names)

    def initialize(self):
        # A state kept by a pickle or by set_params (_pending_state_) is loaded into the
        # module built from the current parameters; until that succeeds it is kept, so a
        # failed rebuild (a moved weights file) can be retried after set_params.
        pending = vars(self).pop("_pending_state_", None)
        history = vars(self).get("history_")
        # Every fit starts a fresh prompt (the protocol), so skorch's "Re-initializing ..."
        # lines carry no news: they are printed only with verbose >= 2.
        verbose = self.verbose
        self.verbose = verbose if verbose >= 2 else 0
        try:
            if pending is not None:
                self._check_backbone_rebuilds()
                self.history_ = None  # skorch clears the history in place; the saved one is kept
            super().initialize()
            if pending is not None:
                self._load_pending_state(pending)
        except BaseException:
            if pending is not None:
                self._pending_state_, self.history_, self.initialized_ = pending, history, False
            raise
        finally:
            self.verbose = verbose
        return self

    def _module_params(self) -> dict:
        """The parameters ``module_`` is built from (compared on every call: see ``set_params``)."""
        return {"class_names": list(self.class_names), "model_name": self.model_name,
                "pretrained": self.pretrained, "image_size": self.image_size, "device": str(self.device),
                "n_ctx": self.n_ctx, "class_specific_ctx": self.class_specific_ctx, "ctx_init": self.ctx_init,
                "template": self.template, "train_visual_norm": self._trains_visual_norm(),
                **self.get_params_for("module")}

    def _check_backbone_rebuilds(self):
        try:
            self.backbone_
        except (OSError, ValueError, ImportError, RuntimeError) as exc:
            message = (f"Cannot rebuild the frozen backbone of this saved ClipPromptClassifier "
                       f"(model_name={self.model_name!r}, pretrained={self.pretrained!r}): {exc}. A saved "
                       "model holds the learned prompt and rebuilds its encoders by name: restore the "
                       "weights, or point to them with set_params(pretrained=...); the learned prompt is "
                       "kept until then.")
            try:
                error = type(exc)(message)
            except Exception:
                error = RuntimeError(message)
            raise error from exc

    def _saved_state(self) -> dict:
        """A copy of what was learned, on the CPU: what a pickle holds instead of the torch objects."""
        return {"module": _to_cpu(self.module_.state_dict()), "optimizer": _to_cpu(self.optimizer_.state_dict()),
                "history": copy.deepcopy(self.history_), "module_params": self.module_params_}

    def _restore_learned(self, saved):
        self.module_.load_state_dict(saved["module"])
        self.optimizer_.load_state_dict(saved["optimizer"])
        self.history_ = saved["history"]

    def _load_pending_state(self, saved):
        """Load a :meth:`_saved_state` into the module just built from the current parameters."""
        if not bool(saved["module"]["prompt_trained"]):
            return  # zero-shot: nothing was learned, the fresh module is the same model
        built_from = saved["module_params"]
        changed = [k for k, v in self.module_params_.items() if k not in PLACEMENT_PARAMS and built_from.get(k) != v]
        differences = self.module_.mismatches(saved["module"])
        if differences and not changed:
            raise ValueError(
                f"The backbone rebuilt from model_name={self.model_name!r}, pretrained={self.pretrained!r} is "
                f"not the one this model's prompt was learned with ({'; '.join(differences)}): its weights "
                "changed. Restore them to use the saved model.")
        if differences:
            warnings.warn(f"{', '.join(changed)} changed since the prompt was learned, and the learned prompt "
                          f"does not apply to the new settings ({'; '.join(differences)}): predictions are "
                          "zero-shot until the next fit.", UserWarning, stacklevel=4)
            return
        self._restore_learned(saved)

    def _sync_module(self, keys=PREDICTION_PARAMS):
        """Rebuild ``module_`` if one of ``keys`` (None: any parameter it was built from)
        changed since it was built (``set_params``), keeping what was learned where it applies."""
        if not self.initialized_:
            return
        built, now = self.module_params_, self._module_params()
        if any(built.get(key) != now.get(key) for key in (now if keys is None else keys)):
            self._pending_state_ = self._saved_state()
            self.initialize()

    def __getstate__(self):
        # The torch objects are rebuilt on first use after loading: a pickle holds the
        # parameters and what was learned, not the frozen encoders (see the class Notes).
        state = {k: v for k, v in vars(self).items() if k not in NOT_PICKLED}
        if self.initialized_:
            state["_pending_state_"] = self._saved_state()
            state["initialized_"] = False
        return state

    def __setstate__(self, state):
        state = dict(state)
        # As skorch: a model saved on a GPU loads on a machine without one (DeviceWarning).
        state["device"] = self._check_device(state["device"], get_map_location(state["device"]))
        vars(self).update(state)

    def initialize_module(self):
        self.check_class_names()
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
        callbacks = [
            ("epoch_timer", EpochTimer()),
            ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
            # with a train_split (ValidSplit...); skipped without one
            ("valid_loss", PassthroughScoring(name="valid_loss")),
            ("valid_acc", EpochScoring(_labeled_accuracy, name="valid_acc", lower_is_better=False)),
            ("lr_scheduler", WarmupCosineLR()),
            ("early_stopping", TrainLossPlateau()),
            ("progress_bar", EpochProgressBar()),
            ("print_log", VerbosePrintLog(sink=self._print_log)),
        ]
        if any(isinstance(cb, LRScheduler) or (isinstance(cb, type) and issubclass(cb, LRScheduler))
               for cb in self._user_callbacks()):
            # a user's schedule replaces CoOp's rather than stacking on it
            callbacks = [item for item in callbacks if item[0] != "lr_scheduler"]
        return callbacks

    def _user_callbacks(self) -> list:
        """The callbacks (instances or classes) given in ``callbacks``, without their names."""
        user = self.callbacks if isinstance(self.callbacks, (list, tuple)) else []
        return [item[1] if isinstance(item, (tuple, list)) else item for item in user]

    def _print_log(self, text):
        if self.verbose >= 2:
            print(text)

    def set_params(self, **params):
        """Set parameters (scikit-learn's and skorch's, nested ones included); returns ``self``.

        New ``class_names`` on a fitted estimator take effect here, not at the next call: a
        learned prompt that does not apply to the new classes is dropped with a warning
        pointing at this call (predictions are zero-shot until the next ``fit``).

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
        if "class_names" in params and self.initialized_:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self._sync_module()
            for warning in caught:
                warnings.warn(warning.message, warning.category, stacklevel=2)
        return self

    def check_is_fitted(self, attributes=None, *args, **kwargs):
        # Zero-shot prediction is a valid state: an unfitted estimator initialises itself.
        if not self.initialized_:
            self.initialize()
        self._sync_module()
        return super().check_is_fitted(attributes, *args, **kwargs)

    def check_data(self, X, y):
        n = n_images(X)
        if n == 0:
            raise ValueError("X is empty: fit needs at least one labeled image.")
        if y is None:
            raise ValueError("ClipPromptClassifier requires y to be passed, but the target y is None "
                             "(entries of class_names or indices into it).")
        given, y = y, np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:  # a column vector, as scikit-learn accepts it
            warnings.warn("A column-vector y was passed when a 1d array was expected; it is used as "
                          "y.ravel().", DataConversionWarning, stacklevel=3)
            given = y = y.ravel()
        if y.ndim != 1:
            raise ValueError(f"y must be 1-d, got shape {y.shape}.")
        if len(y) != n:
            raise ValueError(f"X and y have different lengths: {n} images, {len(y)} labels.")
        y = self._label_indices(given)
        if self.fit_mode == "supervised" and np.any(y == UNLABELED):
            raise ValueError("y == -1 marks unlabeled samples; use fit_mode='ueo' or 'infomax' to learn from them.")
        known = y[(y != UNLABELED) & (y != NONE)]
        bad = sorted(set(known[(known < 0) | (known >= len(self.class_names))].astype(int).tolist()))
        if bad:
            raise ValueError(
                f"Unknown labels {bad[:10]}: y must hold class indices in 0..{len(self.class_names) - 1} "
                f"(class_names has {len(self.class_names)} entries)."
            )

    def get_dataset(self, X, y=None):
        if isinstance(X, TorchDataset):  # ours (TrainingSet, embeddings) or a split of one
            return X
        if y is None:
            self.check_is_fitted()
            return Dataset(self.transform(X), None)
        # Training data depend on the parameters only, not on module_: fit builds them (and
        # so reads and encodes every image) before it re-initialises anything.
        labels = self._label_indices(y)
        frozen = self.frozen_transform(X)
        weights = np.ones(len(labels), dtype=np.float32)
        if self.fit_mode == "ueo":  # fixed once, from the zero-shot model (spec)
            zero_shot = zero_shot_text_features(self.backbone_.text, self.class_names, self.template)
            cosine = torch.from_numpy(frozen) @ zero_shot.cpu().T
            weights = ueo_sample_weights(cosine, self.ueo_temperature).numpy()
            # A person said "none of these classes": the weight of certain OOD, the lowest
            # maximum softmax probability there is.
            weights[labels == NONE] = 1.0 / len(self.class_names)
        if not self._trains_visual_norm():
            return TrainingSet(torch.from_numpy(frozen), labels, weights)
        return TrainingSet(as_image_items(X), labels, weights, transform=self.backbone_.train_preprocess)

    def get_iterator(self, dataset, training=False):
        self.check_training_params()  # batch sizes may have changed since fit (set_params)
        if not training:
            return super().get_iterator(dataset, training=training)
        # One batching rule for every fit mode (labeled batches, joined by unlabeled ones in
        # the UEO modes), seeded: same random_state, same mini-batches, same fit.
        kwargs = {k: v for k, v in self.get_params_for("iterator_train").items()
                  if k not in ("batch_size", "shuffle", "generator", "sampler")}
        labels = _dataset_labels(dataset)
        n = max(1, len(labels))
        # Supervised training has no loss for "none" samples: they are never drawn.
        unlabeled = () if self.fit_mode == "supervised" else (UNLABELED, NONE)
        sampler = SemiSupervisedBatchSampler(labels, n if self.batch_size == -1 else self.batch_size,
                                             n if self.unlabeled_batch_size == -1 else self.unlabeled_batch_size,
                                             self._seed(), unlabeled_labels=unlabeled)
        return self.iterator_train(dataset, batch_sampler=sampler, **kwargs)

    def infer(self, x, **fit_params):
        if isinstance(x, Mapping):  # a TrainingSet batch: the input and UEO's sample weights
            x = x["x"]
        return super().infer(x, **fit_params)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """Cross-entropy on labeled samples, plus ``lambda_ueo`` times UEO's (or InfoMax's)
        loss on the unlabeled ones in the UEO modes, plus ``lambda_kg`` times KgCoOp's prompt
        drift in training."""
        loss = self._data_loss(y_pred, y_true, X, training)
        if training and self.lambda_kg:
            loss = loss + self.lambda_kg * self.module_.prompt_drift()
        return loss

    def _data_loss(self, y_pred, y_true, X, training):
        labels = torch.as_tensor(y_true).to(y_pred.device)
        labeled = labels >= 0  # a class; not UNLABELED, not NONE
        if bool(labeled.all()):
            return super().get_loss(y_pred, y_true, X=X, training=training)
        loss = y_pred.new_zeros(())
        if labeled.any():
            loss = self.criterion_(y_pred[labeled], labels[labeled])
        if self.fit_mode != "supervised" and isinstance(X, Mapping):
            # Unlabeled and "none" samples: UEO's loss (NONE's weight is the lowest, 1 / C).
            logits = y_pred[~labeled] * (UEO_LOGIT_SCALE / self.module_.logit_scale)
            loss = loss + self.lambda_ueo * ueo_loss(logits, X["weight"].to(y_pred.device)[~labeled])
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
        ValueError
            Empty ``X``, length mismatch, labels outside ``range(len(class_names))``,
            duplicate class names, an invalid ``template``, unreadable images, NaN pixels.
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
        self.check_class_names()
        self.check_params()
        self.check_data(X, y)
        with self._labels_of(y):
            y = self._label_indices(y)
            if X_unlabeled is not None and n_images(X_unlabeled):
                if self.fit_mode == "supervised":
                    raise ValueError("X_unlabeled is used by fit_mode='ueo' or 'infomax' only.")
                X = as_image_items(X) + as_image_items(X_unlabeled)
                y = np.concatenate([y, np.full(n_images(X_unlabeled), UNLABELED, dtype=np.int64)])
            with self._all_or_nothing():
                dataset = self.get_dataset(X, y)  # reads and encodes every image: bad ones fail here
                if self.fit_mode == "supervised" and not bool((dataset.labels >= 0).any()):
                    return self._fit_without_classes()
                if self.warm_start:
                    self._sync_module(keys=None)  # continuing needs a module of the current parameters
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
            given = set(np.asarray(classes).tolist())
            if not (given <= set(self.class_names) or given <= set(range(len(self.class_names)))):
                raise ValueError(f"classes={sorted(map(str, given))} are not all in class_names "
                                 f"{list(self.class_names)!r} (or their indices).")
        with self._labels_of(y), self._all_or_nothing():
            if y is not None and not isinstance(X, TorchDataset):
                self.check_data(X, y)
                y = self._label_indices(y)
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
            labels = np.asarray(y if y is not None else _dataset_labels(X))
            epochs = shot_schedule_epochs(int(np.sum(labels >= 0)), len(self.class_names))
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
            if not self._stopped_early():  # skorch's EarlyStopping ends training this way too
                self._interrupted_ = exc  # raised again by partial_fit, after skorch's on_train_end
            raise

    def _stopped_early(self) -> bool:
        """Whether a skorch ``EarlyStopping`` callback just ended training (it raises
        ``KeyboardInterrupt``, as Ctrl-C does: the fit is then finished, not interrupted)."""
        return any(isinstance(cb, EarlyStopping) and cb.patience is not None
                   and getattr(cb, "misses_", 0) >= cb.patience for _, cb in self.callbacks_)

    @contextlib.contextmanager
    def _all_or_nothing(self):
        """Restore the estimator as it was if the block raises (or is interrupted)."""
        if vars(self).get("_in_transaction_"):
            yield
            return
        before = dict(vars(self))
        learned = self._saved_state() if self.initialized_ else None  # warm starts train in place
        self._in_transaction_ = True
        try:
            yield
        except BaseException:
            vars(self).clear()
            vars(self).update(before)
            if learned is not None:
                self._restore_learned(learned)
            raise
        finally:
            vars(self).pop("_in_transaction_", None)


def _to_cpu(value):
    """``value`` (nested dicts and lists of tensors) with every tensor copied to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


# modAL learners wrap this estimator, however it was imported: their teach must be patched.
patch_modal()
