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
    training switches it to the learned prompts. In evaluation mode the learned text features
    are computed once and reused for every batch.

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
                 template="a photo of a {}.", generator=None, train_visual_norm=False):
        super().__init__()
        self.prompt_learner = PromptLearner(backbone.text, class_names, n_ctx, class_specific_ctx,
                                            ctx_init, generator)
        self.logit_scale = backbone.logit_scale
        with torch.no_grad():
            zero_shot = backbone.text.encode_text([template.format(n) for n in class_prompt_names(class_names)])
        self.register_buffer("zero_shot_features", zero_shot)
        self.register_buffer("prompt_trained", torch.tensor(False))
        self.visual = norm_adapted_copy(backbone.visual) if train_visual_norm else None
        self._eval_text_features = None

    def train(self, mode: bool = True):
        if mode:
            self._eval_text_features = None  # the context is about to change
        super().train(mode)
        if self.visual is not None:
            self.visual.eval()  # only affine parameters adapt; BatchNorm statistics stay frozen
        return self

    def load_state_dict(self, *args, **kwargs):
        self._eval_text_features = None
        return super().load_state_dict(*args, **kwargs)

    def text_features(self) -> torch.Tensor:
        """Normalised class text features ``(C, D)`` currently in use."""
        if not bool(self.prompt_trained):
            return self.zero_shot_features
        if self.training or torch.is_grad_enabled():
            return F.normalize(self.prompt_learner(), dim=-1)
        if self._eval_text_features is None:
            self._eval_text_features = F.normalize(self.prompt_learner(), dim=-1)
        return self._eval_text_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of embeddings ``(n, D)``, or of images ``(n, 3, H, W)`` (``train_visual_norm``)."""
        if x.dim() == 4:
            x = F.normalize(self.visual(x), dim=-1)
        return self.logit_scale * x @ self.text_features().T
