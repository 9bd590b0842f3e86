"""``ClipLinearProbe``: a zero-shot-initialised linear head on the cached image embeddings,
the fast sibling of :class:`~modal_vlm.ClipPromptClassifier`.

The head is a cosine classifier, ``softmax(logit_scale * f @ normalize(W).T)``, whose class
weights ``W`` start at the zero-shot text features ``T0`` and are trained with cross-entropy
plus KgCoOp's pull toward them, ``lambda_kg * mean_c (1 - cos(w_c, t0_c))`` (the same
regulariser as the prompt learner's; CLAP, Silva-Rodriguez et al., CVPR 2024, and LP++,
Huang et al., CVPR 2024, show such zero-shot-anchored linear probes matching CoOp in
few-shot CLIP adaptation). Nothing goes through the text tower after the zero-shot prompts
are encoded once, so a fit is a few hundred small matrix products, far faster than prompt
tuning (``benchmarks/results/learners.md``).

Why a sibling estimator, not a parameter of ``ClipPromptClassifier``: half of the prompt
learner's parameters (``n_ctx``, ``ctx_init``, ``class_specific_ctx``, its SGD recipe and
the shot schedule of epochs) mean nothing to a linear head, and the head's own defaults
(Adam, one full batch per step, a fixed step count) differ from CoOp's; one class with a
mode switch would hold parameters that silently do nothing. The sibling inherits
everything else unchanged (encoding through the cache, zero-shot before any label, labels by
name or index, the all-or-nothing ``fit``, pickling, ``clone``, skorch's callbacks and
history, UEO's fit modes, and what the query strategies read: ``transform``,
``predict_proba_from_features``, ``class_text_features``), so it can replace the prompt
learner anywhere: in modAL's ``ActiveLearner``, the experiment runner and the labeling app.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from .classifier import ClipPromptClassifier
from .prompted_clip import PromptedCLIP

#: Torch threads of the head's training loop. Its steps are products of a few hundred
#: embeddings with C weight vectors, too small to split: on a busy machine, threads waiting
#: for each other made a fit many times slower than in one thread
#: (``benchmarks/results/learners.md``).
TRAIN_THREADS = 1


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with at most ``n`` torch intra-op threads (restored after).

    ``torch.set_num_threads`` is process-wide: torch work in other threads of the process
    gets the same count while the block runs.

    Examples
    --------
    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    before = torch.get_num_threads()
    if before <= n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class LinearProbeCLIP(PromptedCLIP):
    """:class:`~modal_vlm.model.prompted_clip.PromptedCLIP` whose class text features are free
    weights ``W`` (``class_weights``, ``(C, D)``) started at the zero-shot text features.

    ``logits = logit_scale * f @ normalize(W).T``; before training (``prompt_trained`` False)
    the zero-shot features are used, exactly as by the prompt learner, and at the start of
    training ``normalize(W)`` equals them, so the first labels move the model from zero-shot.
    :meth:`prompt_drift` is KgCoOp's ``mean_c (1 - cos(w_c, t0_c))``. The prompt parameters
    (``n_ctx``, ``class_specific_ctx``, ``ctx_init``, ``generator``) are accepted and ignored:
    ``W`` starts where zero-shot is, deterministically.

    Parameters
    ----------
    backbone : Backbone
        The frozen encoders (:func:`~modal_vlm.backbones.get_backbone`).
    class_names : list of str
        The classes.
    n_ctx : int, default=16
        The prompt learner's; accepted and ignored.
    class_specific_ctx : bool, default=True
        The prompt learner's; accepted and ignored.
    ctx_init : str, optional
        The prompt learner's; accepted and ignored.
    template : str, default="a photo of a {}."
        The zero-shot prompt that gives the starting weights.
    generator : torch.Generator, optional
        The prompt learner's; accepted and ignored.
    train_visual_norm : bool, default=False
        As for :class:`~modal_vlm.model.prompted_clip.PromptedCLIP`.

    Examples
    --------
    >>> import torch
    >>> from modal_vlm.backbones import get_backbone
    >>> head = LinearProbeCLIP(get_backbone("tiny-vit"), ["cat", "dog"])
    >>> tuple(head.class_weights.shape), bool(torch.allclose(head.learned_text_features(),
    ...                                                      head.zero_shot_features))
    ((2, 32), True)
    """

    def init_learned_text(self, backbone, class_names, n_ctx, class_specific_ctx, ctx_init, generator, template):
        self.class_weights = nn.Parameter(self.zero_shot_features.detach().clone())

    def learned_text_features(self) -> torch.Tensor:
        """The class weights as the model uses them.

        Returns
        -------
        torch.Tensor
            ``normalize(W)``, ``(C, D)`` (with grad).
        """
        return F.normalize(self.class_weights, dim=-1)

    def describe(self) -> dict:
        """What a learned state depends on (see :meth:`PromptedCLIP.describe`).

        Returns
        -------
        dict
            ``class_names``, ``backbone``, ``head`` (``"linear"``) and ``adapts_visual``.
        """
        return {"class_names": self.class_names, "backbone": self.backbone_key, "head": "linear",
                "adapts_visual": self.visual is not None}


class ClipLinearProbe(ClipPromptClassifier):
    """Zero-shot-initialised linear probe of a frozen CLIP-like model, with the interface of
    :class:`~modal_vlm.ClipPromptClassifier` (scikit-learn, skorch, modAL).

    The image and text encoders stay frozen; the trained parameters are one weight vector
    per class, ``W`` ``(C, D)``, started at the zero-shot text features ``T0`` and pulled
    back toward them (see the module docstring). Each step uses every labeled embedding
    (``batch_size=-1``), so one epoch is one Adam step. Before ``fit`` it predicts
    zero-shot, like the prompt learner; embeddings are cached and shared with every
    estimator of the same backbone.

    Parameters
    ----------
    class_names : list of str
        The classes (see :class:`~modal_vlm.ClipPromptClassifier`).
    model_name : str, default="ViT-B-32"
        The backbone, as for ``ClipPromptClassifier``.
    pretrained : str or path-like, optional
        Its weights, as for ``ClipPromptClassifier``.
    template : str, default="a photo of a {}."
        The zero-shot prompt that gives ``T0``.
    lambda_kg : float, default=8.0
        Weight of the pull toward the zero-shot text features,
        ``lambda_kg * mean_c (1 - cos(w_c, t0_c))``; 0 is a plain (cosine) linear probe.
    image_size : int, optional
        Input size of the image encoder, as for ``ClipPromptClassifier``.
    max_epochs : int, default=200
        Optimizer steps per ``fit`` (one full batch each), all of them (no early stopping:
        the steps are cheap, and the pull toward zero-shot needs them at few labels).
    lr : float, default=0.01
        Adam's learning rate, annealed to 0 by a cosine over ``max_epochs``
        (:class:`~modal_vlm.model.schedule.WarmupCosineLR`, no warm-up).
    batch_size : int, default=-1
        Labeled samples per step; -1: all of them.
    optimizer : torch optimizer class, default=torch.optim.Adam
        skorch's ``optimizer``; its settings through ``optimizer__*``.
    module : class, default=LinearProbeCLIP
        skorch's ``module``: the head.
    encode_batch_size : int, default=64
        Images per encoding batch, as for ``ClipPromptClassifier``.
    encode_dtype : str, optional
        Precision of the encoding, as for ``ClipPromptClassifier``.
    jpeg_draft : bool, default=True
        Decode JPEGs at a reduced size when they are large, as for ``ClipPromptClassifier``.
    encode_workers : int, optional
        Decoding threads, as for ``ClipPromptClassifier``.
    cache_dir : str or path-like, optional
        The embedding cache on disk, as for ``ClipPromptClassifier``.
    device : str, default="cpu"
        The torch device.
    random_state : int, RandomState or None, default=None
        Seeds the mini-batch order (with the default full batch, the fit is deterministic
        whatever the seed).
    warm_start : bool, default=False
        ``fit`` restarts ``W`` from ``T0`` unless True.
    verbose : int, default=1
        0: silent; 1: progress bars when encoding or training takes over 2 s (on a terminal
        only); 2: skorch's per-epoch table as well.
    fit_mode : {"supervised", "ueo", "infomax"}, default="supervised"
        As for ``ClipPromptClassifier``, with the image encoder frozen
        (``train_visual_norm=False``): UEO's unlabeled loss trains the head only.
    lambda_ueo : float, default=1.0
        Weight of UEO's unlabeled loss, as for ``ClipPromptClassifier``.
    ueo_temperature : float, default=1.0
        UEO's weighting temperature, as for ``ClipPromptClassifier``.
    unlabeled_batch_size : int, default=64
        Unlabeled images per step in the UEO modes.
    **kwargs
        Any other skorch parameter (``callbacks``, ``train_split``, ``optimizer__*``...).

    Attributes
    ----------
    classes_, backbone_, history_, fit_epochs_
        As for ``ClipPromptClassifier``.
    module_ : LinearProbeCLIP
        The head; ``module_.class_weights`` holds ``W``.

    See Also
    --------
    modal_vlm.ClipPromptClassifier : CoOp prompt tuning, the canonical estimator.

    Notes
    -----
    The training loop runs in one torch thread (:data:`TRAIN_THREADS`; restored after), where
    threads only wait for each other.

    Chosen by ``benchmarks/bench_learners.py`` (``benchmarks/results/learners.md``): at 10 to
    80 random labels it scores with the prompt learner's defaults at a small fraction of
    their fit time, which is why the labeling app and ``modal-vlm demo`` use it.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    >>> head = ClipLinearProbe(["cat", "dog"], model_name="tiny-vit", verbose=0)
    >>> zero_shot = head.predict(X)                  # before any label
    >>> head.fit(X, ["cat", "dog"] * 3).module_.class_weights.shape
    torch.Size([2, 32])
    >>> len(head.history_), set(head.predict(X)) <= {"cat", "dog"}
    (200, True)
    """

    PROGRESS_LABEL = "training linear head"

    def __init__(self, class_names, *, model_name="ViT-B-32", pretrained=None, template="a photo of a {}.",
                 lambda_kg=8.0, image_size=None, max_epochs=200, lr=0.01, batch_size=-1,
                 optimizer=torch.optim.Adam, module=LinearProbeCLIP,
                 encode_batch_size=64, encode_dtype=None, jpeg_draft=True,
                 encode_workers=None, cache_dir=None, device="cpu", random_state=None, warm_start=False,
                 verbose=1, fit_mode="supervised", lambda_ueo=1.0, ueo_temperature=1.0,
                 unlabeled_batch_size=64, **kwargs):
        super().__init__(
            class_names, model_name=model_name, pretrained=pretrained, template=template, lambda_kg=lambda_kg,
            image_size=image_size, max_epochs=max_epochs, lr=lr, batch_size=batch_size, optimizer=optimizer,
            encode_batch_size=encode_batch_size, encode_dtype=encode_dtype, jpeg_draft=jpeg_draft,
            encode_workers=encode_workers, cache_dir=cache_dir, device=device, random_state=random_state,
            warm_start=warm_start, verbose=verbose, fit_mode=fit_mode, lambda_ueo=lambda_ueo,
            ueo_temperature=ueo_temperature, unlabeled_batch_size=unlabeled_batch_size,
            module=module, train_visual_norm=False, warmup_epochs=0, n_iter_no_change=None, **kwargs)

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        with torch_threads(TRAIN_THREADS):
            return super().fit_loop(X, y, epochs=epochs, **fit_params)


__all__ = ["ClipLinearProbe", "LinearProbeCLIP"]
