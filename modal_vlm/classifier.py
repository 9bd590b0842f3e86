"""``ClipPromptClassifier``: prompt tuning of a frozen CLIP-like model as a scikit-learn
classifier (skorch), ready for modAL."""
from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import torch
from skorch import NeuralNetClassifier
from skorch.callbacks import EpochTimer, LRScheduler, PassthroughScoring, PrintLog
from skorch.dataset import Dataset
from sklearn.utils import check_random_state

from .backbones import get_backbone
from .cache import EmbeddingCache
from .callbacks import EpochProgressBar, WarmupCosine
from .encoding import check_encode_dtype, check_workers, embedding_key, encode_images
from .inputs import as_image_items, n_images
from .losses import ueo_loss, ueo_sample_weights
from .prompted_clip import PromptedCLIP
from .ueo import UNLABELED, SemiSupervisedBatchSampler, TrainingSet

FIT_MODES = ("supervised", "ueo", "infomax")
#: UEO's training logits use CLIP's fixed scale, whatever the backbone's own.
UEO_LOGIT_SCALE = 100.0


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
        The classes; ``y`` holds indices into this list and ``classes_`` is
        ``arange(len(class_names))`` from the start.
    model_name : str, default="ViT-B-32"
        A backbone from :func:`modal_vlm.backbones.list_backbones`: any open_clip
        architecture, the offline reference model ``"conse-efficientnet-lite0-minilm"``, or
        the tiny test models. Loaded on first use, once per process.
    pretrained : str, optional
        open_clip tag (``"openai"``), local weights file, or ``"random"``; None takes the
        model's default (``"openai"`` for ViT-B-32).
    n_ctx : int, default=16
        Number of learned context vectors.
    class_specific_ctx : bool, default=True
        One context per class (CoOp's CSC).
    ctx_init : str, optional
        Initialise the context from this text (e.g. ``"a photo of a"``) instead of N(0, 0.02).
    template : str, default="a photo of a {}."
        Zero-shot prompt used before the first ``fit``.
    image_size : int, optional
        Input resolution of the image encoder; None keeps the model's own.
    max_epochs : int, default=200
        Training epochs of every ``fit`` (CoOp's 200; fewer on a CPU). An epoch passes once
        over the labeled samples.
    lr : float, default=0.002
        Learning rate of the SGD optimizer (momentum 0.9 and weight decay 5e-4 by default,
        set through ``optimizer__momentum`` and ``optimizer__weight_decay``) after the
        warm-up, annealed by CoOp's cosine schedule: ``lr * (1 + cos(pi * t / max_epochs)) / 2``
        in the ``t``-th epoch after the warm-up.
    batch_size : int, default=32
        Labeled samples per training step.
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
        :class:`modal_vlm.cache.EmbeddingCache`).
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
    **kwargs
        Any other skorch parameter (``optimizer``, ``optimizer__momentum``, ``callbacks``,
        ``iterator_train__num_workers``...).

    Attributes
    ----------
    classes_ : ndarray of int of shape (n_classes,)
        ``arange(len(class_names))``, available before ``fit``: labels are indices into
        ``class_names``.
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

    def __init__(self, class_names, *, model_name="ViT-B-32", pretrained=None, n_ctx=16,
                 class_specific_ctx=True, ctx_init=None, template="a photo of a {}.",
                 image_size=None, max_epochs=200, lr=0.002, batch_size=32, warmup_epochs=1,
                 warmup_lr=1e-5, encode_batch_size=64, encode_dtype=None, jpeg_draft=True,
                 encode_workers=None, cache_dir=None, device="cpu",
                 random_state=None, warm_start=False, verbose=1, fit_mode="supervised",
                 lambda_ueo=1.0, ueo_temperature=1.0, train_visual_norm="auto",
                 unlabeled_batch_size=64, **kwargs):
        defaults = {
            "module": PromptedCLIP,
            "criterion": torch.nn.CrossEntropyLoss,
            "optimizer": torch.optim.SGD,
            "optimizer__momentum": 0.9,
            "optimizer__weight_decay": 5e-4,
            "train_split": None,
        }
        super().__init__(**{**defaults, **kwargs}, max_epochs=max_epochs, lr=lr,
                         batch_size=batch_size, device=device, warm_start=warm_start, verbose=verbose)
        self.class_names = class_names
        self.model_name = model_name
        self.pretrained = pretrained
        self.n_ctx = n_ctx
        self.class_specific_ctx = class_specific_ctx
        self.ctx_init = ctx_init
        self.template = template
        self.image_size = image_size
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

    # -- the frozen model and its embeddings ------------------------------------------------

    @property
    def backbone_(self):
        return get_backbone(self.model_name, self.pretrained, self.device, self.image_size)

    @property
    def classes_(self):
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

    def _encode(self, backbone, X, key, visual=None) -> np.ndarray:
        return encode_images(backbone, X, cache=EmbeddingCache(key, self.cache_dir),
                             batch_size=self.encode_batch_size, verbose=self.verbose, visual=visual,
                             encode_dtype=self.encode_dtype, jpeg_draft=self.jpeg_draft,
                             num_workers=self.encode_workers)

    def predict_ood_score(self, X) -> np.ndarray:
        """In-distribution score: the maximum softmax probability over the known classes.

        Higher means more likely one of ``class_names``; see
        :func:`modal_vlm.metrics.ood_metrics` for AUROC and FPR at 95 % TPR.

        Parameters
        ----------
        X : images
            Paths, PIL images, uint8 arrays or preprocessed tensors.

        Returns
        -------
        ndarray of float32 of shape (n_samples,)
            Scores in ``[1 / n_classes, 1]``.
        """
        return self.predict_proba(X).max(axis=1)

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
            If ``features`` is not 2-d.
        """
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2:
            raise ValueError(f"features must be 2-d (n, D), got shape {features.shape}.")
        return super().predict_proba(Dataset(features, None))

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
        """Raise ``ValueError`` for an unknown ``fit_mode`` or an invalid UEO setting."""
        if self.fit_mode not in FIT_MODES:
            raise ValueError(f"Unknown fit_mode {self.fit_mode!r}; use one of {FIT_MODES}.")
        if self.train_visual_norm not in ("auto", True, False):
            raise ValueError(f"train_visual_norm must be True, False or 'auto', got {self.train_visual_norm!r}.")
        if not self.ueo_temperature > 0 or self.lambda_ueo < 0:
            raise ValueError("ueo_temperature must be > 0 and lambda_ueo >= 0.")
        check_encode_dtype(self.encode_dtype)
        check_workers(self.encode_workers)

    def check_class_names(self):
        """Raise ``ValueError`` for empty, non-string or duplicate class names."""
        names = self.class_names
        if isinstance(names, str) or not hasattr(names, "__len__") or len(names) < 2:
            raise ValueError(f"class_names must be a list of at least 2 names, got {names!r}.")
        if not all(isinstance(n, str) and n.strip() for n in names):
            raise ValueError(f"class_names must be non-empty strings, got {list(names)!r}.")
        duplicates = sorted(n for n, count in Counter(names).items() if count > 1)
        if duplicates:
            raise ValueError(f"class_names has duplicates: {duplicates}.")

    def initialize(self):
        # Every fit starts a fresh prompt (the protocol), so skorch's "Re-initializing ..."
        # lines carry no news: they are printed only with verbose >= 2.
        verbose = self.verbose
        self.verbose = verbose if verbose >= 2 else 0
        try:
            return super().initialize()
        finally:
            self.verbose = verbose

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
        return self

    def get_all_learnable_params(self):
        # The frozen encoders sit inside module_; only the prompt context is learned.
        for name, param in super().get_all_learnable_params():
            if param.requires_grad:
                yield name, param

    @property
    def _default_callbacks(self):
        schedule = WarmupCosine(self.lr, self.max_epochs, self.warmup_epochs, self.warmup_lr)
        return [
            ("epoch_timer", EpochTimer()),
            ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
            ("lr_scheduler", LRScheduler(policy=torch.optim.lr_scheduler.LambdaLR, lr_lambda=schedule)),
            ("progress_bar", EpochProgressBar()),
            ("print_log", PrintLog(sink=self._print_log)),
        ]

    def _print_log(self, text):
        if self.verbose >= 2:
            print(text)

    def check_is_fitted(self, attributes=None, *args, **kwargs):
        # Zero-shot prediction is a valid state: an unfitted estimator initialises itself.
        if not self.initialized_:
            self.initialize()
        return super().check_is_fitted(attributes, *args, **kwargs)

    def check_data(self, X, y):
        n = n_images(X)
        if n == 0:
            raise ValueError("X is empty: fit needs at least one labeled image.")
        if y is None:
            raise ValueError("y is required: class indices into class_names.")
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-d, got shape {y.shape}.")
        if len(y) != n:
            raise ValueError(f"X and y have different lengths: {n} images, {len(y)} labels.")
        if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
            raise ValueError(f"y must hold integer class indices into class_names, got dtype {y.dtype}.")
        if self.fit_mode == "supervised" and np.any(y == UNLABELED):
            raise ValueError("y == -1 marks unlabeled samples; use fit_mode='ueo' or 'infomax' to learn from them.")
        known = y[y != UNLABELED] if self.fit_mode != "supervised" else y
        bad = sorted(set(known[(known < 0) | (known >= len(self.class_names))].astype(int).tolist()))
        if bad:
            raise ValueError(
                f"Unknown labels {bad[:10]}: y must hold class indices in 0..{len(self.class_names) - 1} "
                f"(class_names has {len(self.class_names)} entries)."
            )

    def get_dataset(self, X, y=None):
        if isinstance(X, (Dataset, TrainingSet)):
            return X
        self.check_is_fitted()
        if y is None:
            return Dataset(self.transform(X), None)
        labels = np.asarray(y).astype(np.int64)
        frozen = self.frozen_transform(X)
        weights = np.ones(len(labels), dtype=np.float32)
        if self.fit_mode == "ueo":  # fixed once, from the zero-shot model (spec)
            cosine = torch.from_numpy(frozen) @ self.module_.zero_shot_features.cpu().T
            weights = ueo_sample_weights(cosine, self.ueo_temperature).numpy()
        if self.module_.visual is None:
            return TrainingSet(torch.from_numpy(frozen), labels, weights)
        return TrainingSet(as_image_items(X), labels, weights, transform=self.backbone_.train_preprocess)

    def get_iterator(self, dataset, training=False):
        if not training:
            return super().get_iterator(dataset, training=training)
        # One batching rule for every fit mode (labeled batches, joined by unlabeled ones in
        # the UEO modes), seeded: same random_state, same mini-batches, same fit.
        kwargs = {k: v for k, v in self.get_params_for("iterator_train").items()
                  if k not in ("batch_size", "shuffle", "generator", "sampler")}
        sampler = SemiSupervisedBatchSampler(dataset.labels, self.batch_size, self.unlabeled_batch_size,
                                             self._seed())
        return self.iterator_train(dataset, batch_sampler=sampler, **kwargs)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """Cross-entropy on labeled samples, plus ``lambda_ueo`` times UEO's (or InfoMax's)
        loss on the unlabeled ones in the UEO modes."""
        if not isinstance(y_true, dict):
            return super().get_loss(y_pred, y_true, X=X, training=training)
        labels = y_true["label"].to(y_pred.device)
        labeled = labels != UNLABELED
        loss = y_pred.new_zeros(())
        if labeled.any():
            loss = self.criterion_(y_pred[labeled], labels[labeled])
        if self.fit_mode != "supervised" and not labeled.all():
            logits = y_pred[~labeled] * (UEO_LOGIT_SCALE / self.module_.logit_scale)
            loss = loss + self.lambda_ueo * ueo_loss(logits, y_true["weight"].to(y_pred.device)[~labeled])
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
            Class indices into ``class_names``; -1 marks unlabeled samples (UEO modes).
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
            duplicate class names, unreadable images.
        FileNotFoundError
            A missing image file (named in the message).
        """
        self.check_class_names()
        self.check_params()
        self.check_data(X, y)  # before re-initialising: a rejected fit leaves the model as it was
        if X_unlabeled is not None and n_images(X_unlabeled):
            if self.fit_mode == "supervised":
                raise ValueError("X_unlabeled is used by fit_mode='ueo' or 'infomax' only.")
            X = as_image_items(X) + as_image_items(X_unlabeled)
            y = np.concatenate([np.asarray(y, dtype=np.int64),
                                np.full(n_images(X_unlabeled), UNLABELED, dtype=np.int64)])
        return super().fit(X, y, **fit_params)
