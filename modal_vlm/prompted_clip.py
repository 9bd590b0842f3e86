"""The torch module behind :class:`~modal_vlm.ClipPromptClassifier`: image embeddings in,
class logits out."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .prompt_learner import PromptLearner, class_prompt_names
from .ueo import norm_adapted_copy


class PromptedCLIP(nn.Module):
    """``logits = logit_scale * f @ t.T`` with ``f`` the (cached, normalised) image embeddings
    and ``t`` the normalised class text features.

    With ``train_visual_norm`` the module also owns a copy of the image encoder whose
    normalisation affine parameters train (UEO); it then accepts image batches
    ``(n, 3, H, W)`` as well as embeddings.

    Until it is trained, ``t`` comes from the hand-written ``template`` (zero-shot CLIP);
    training switches it to the learned prompts, mixed with the zero-shot features by
    ``zero_shot_weight``: ``t = (1 - w) t_learned + w t_zero_shot``, in training as well (the
    prompt learns a correction of zero-shot). In evaluation mode the learned text features are
    computed once and reused for every batch.

    Parameters
    ----------
    backbone : Backbone
        Frozen model; its text tower and logit scale are used.
    class_names : list of str
        The classes.
    n_ctx, class_specific_ctx, ctx_init, generator
        See :class:`~modal_vlm.prompt_learner.PromptLearner`.
    template : str
        Zero-shot prompt, ``{}`` is replaced by the class name.
    zero_shot_weight : float, default=0.0
        Weight ``w`` of the zero-shot text features in the trained model's.
    train_visual_norm : bool
        Adapt the image encoder's normalisation layers (see
        :func:`~modal_vlm.ueo.norm_adapted_copy`).

    Examples
    --------
    >>> import torch
    >>> from modal_vlm.backbones import get_backbone
    >>> module = PromptedCLIP(get_backbone("tiny-vit"), ["cat", "dog"], n_ctx=2)
    >>> module(torch.nn.functional.normalize(torch.randn(5, 32), dim=-1)).shape
    torch.Size([5, 2])
    """

    def __init__(self, backbone, class_names, n_ctx=16, class_specific_ctx=True, ctx_init=None,
                 template="a photo of a {}.", generator=None, train_visual_norm=False, zero_shot_weight=0.0):
        super().__init__()
        self.prompt_learner = PromptLearner(backbone.text, class_names, n_ctx, class_specific_ctx,
                                            ctx_init, generator, template)
        self.zero_shot_weight = float(zero_shot_weight)
        self.logit_scale = backbone.logit_scale
        with torch.no_grad():
            zero_shot = backbone.text.encode_text([template.format(n) for n in class_prompt_names(class_names)])
        self.register_buffer("zero_shot_features", zero_shot)
        self.register_buffer("prompt_trained", torch.tensor(False))
        self.visual = norm_adapted_copy(backbone.visual) if train_visual_norm else None
        self._eval_text_features = None
        self._train_text_features = None

    def train(self, mode: bool = True):
        if mode:
            self._eval_text_features = None  # the context is about to change
        self._train_text_features = None  # holds a graph: never kept beyond its step
        super().train(mode)
        if self.visual is not None:
            self.visual.eval()  # only affine parameters adapt; BatchNorm statistics stay frozen
        return self

    def load_state_dict(self, *args, **kwargs):
        self._eval_text_features = None
        return super().load_state_dict(*args, **kwargs)

    def learned_text_features(self) -> torch.Tensor:
        """Normalised text features ``(C, D)`` of the learned prompts (recomputed; with grad)."""
        return F.normalize(self.prompt_learner(), dim=-1)

    def _mixed(self, learned):
        w = self.zero_shot_weight
        return learned if w == 0 else (1.0 - w) * learned + w * self.zero_shot_features

    def text_features(self) -> torch.Tensor:
        """Class text features ``(C, D)`` currently in use (zero-shot until trained)."""
        if not bool(self.prompt_trained):
            return self.zero_shot_features
        if self.training or torch.is_grad_enabled():
            # Kept for prompt_drift(): the regulariser reuses this step's text forward pass.
            self._train_text_features = self.learned_text_features()
            return self._mixed(self._train_text_features)
        if self._eval_text_features is None:
            self._eval_text_features = self._mixed(self.learned_text_features())
        return self._eval_text_features

    def prompt_drift(self) -> torch.Tensor:
        """KgCoOp's distance of the learned prompts from zero-shot, ``mean_c (1 - cos(t_c, t_c^zs))``.

        Computed from the text features of the last training forward pass (differentiable),
        so the regulariser costs no extra pass through the text tower.

        Returns
        -------
        torch.Tensor
            A scalar in ``[0, 2]``; 0 when the learned prompts give the zero-shot features.
        """
        if self._train_text_features is None:
            raise RuntimeError("prompt_drift() needs a training forward pass first.")
        cosine = (self._train_text_features * self.zero_shot_features).sum(-1)
        return (1.0 - cosine).mean()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of embeddings ``(n, D)``, or of images ``(n, 3, H, W)`` (``train_visual_norm``)."""
        if x.dim() == 4:
            x = F.normalize(self.visual(x), dim=-1)
        return self.logit_scale * x @ self.text_features().T
