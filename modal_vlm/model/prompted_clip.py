"""The torch module behind :class:`~modal_vlm.ClipPromptClassifier`: image embeddings in,
class logits out."""
from __future__ import annotations

import json
import string
import weakref

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..exceptions import InvalidParameterError
from .prompt_learner import PromptLearner, class_prompt_names
from .training_data import norm_adapted_copy


def check_template(template) -> None:
    """Raise ``InvalidParameterError`` unless ``template`` has exactly one ``{}``, where the class
    name goes.

    Without it every class gets the same prompt (all zero-shot probabilities ``1 / C``);
    named or numbered fields cannot be filled. Literal braces are written ``{{`` and ``}}``.

    Parameters
    ----------
    template : str
        A zero-shot prompt such as ``"a photo of a {}."``.

    Raises
    ------
    InvalidParameterError
        Not a string, no ``{}``, several, a named field or unbalanced braces.

    Examples
    --------
    >>> check_template("a photo of a {}.")
    >>> check_template("a photo of a {name}.")  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    modal_vlm.exceptions.InvalidParameterError: template must hold exactly one '{}' where the class name goes
    (e.g. 'a photo of a {}.'); got 'a photo of a {name}.' with the field(s) {name}.
    """
    hint = "template must hold exactly one '{}' where the class name goes (e.g. 'a photo of a {}.')"
    if not isinstance(template, str):
        raise InvalidParameterError(f"{hint}; got {template!r}.")
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as exc:
        raise InvalidParameterError(
            f"{hint}; got {template!r}: {exc} (write literal braces as '{{{{' and '}}}}').") from None
    if fields != [("", "", None)]:
        found = "no field" if not fields else "the field(s) " + ", ".join(
            "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            for name, spec, conversion in fields)
        raise InvalidParameterError(f"{hint}; got {template!r} with {found}.")


def _keep_learned_tensors(module, state_dict, prefix, local_metadata) -> None:
    """``state_dict`` post-hook of :class:`PromptedCLIP`: drop its frozen tensors."""
    keep = {prefix + name for name in module.learned_keys()}
    for key in [k for k in state_dict if k.startswith(prefix) and k not in keep]:
        del state_dict[key]


#: Zero-shot text features already computed, per text tower (frozen: they never change):
#: every ``fit`` builds a new module, and one pass of the tower over C prompts cost about a
#: third of a linear head's whole fit.
_ZERO_SHOT = weakref.WeakKeyDictionary()


def zero_shot_text_features(text, class_names, template) -> torch.Tensor:
    """Normalised text features ``(C, D)`` of the zero-shot prompts ``template.format(name)``.

    Computed once per text tower, class names and template (the tower is frozen), then
    served from memory; each call returns its own copy.

    Parameters
    ----------
    text : TextTower
        The frozen text encoder.
    class_names : list of str
        The classes (underscores become spaces).
    template : str
        Checked by :func:`check_template`.

    Returns
    -------
    torch.Tensor of shape (n_classes, D)
        One unit-norm feature per class.
    """
    check_template(template)
    key = (tuple(class_prompt_names(class_names)), template)
    known = _ZERO_SHOT.setdefault(text, {})
    if key not in known:
        with torch.no_grad():
            known[key] = text.encode_text([template.format(n) for n in key[0]])
    return known[key].clone()


class PromptedCLIP(nn.Module):
    """``logits = logit_scale * f @ t.T`` with ``f`` the (cached, normalised) image embeddings
    and ``t`` the normalised class text features.

    With ``train_visual_norm`` the module also owns a copy of the image encoder whose
    normalisation affine parameters train (UEO); it then accepts image batches
    ``(n, 3, H, W)`` as well as embeddings.

    Until it is trained, ``t`` comes from the hand-written ``template`` (zero-shot CLIP);
    training switches it to the learned prompts. In evaluation mode the learned text features
    are computed once and reused for every batch.

    Its ``state_dict`` holds what was learned, nothing frozen: the trainable tensors (the
    context, and the adapted normalisation layers with ``train_visual_norm``), the
    ``prompt_trained`` flag and, as extra state, what the prompt was learned for (class
    names, backbone identity, context shape). The frozen encoders come from the backbone,
    rebuilt by name; :meth:`load_state_dict` refuses a state learned for other classes or
    another backbone. A saved prompt of the offline model is a few hundred kB, not the
    ~90 MB of its text encoder.

    Parameters
    ----------
    backbone : Backbone
        Frozen model; its text tower and logit scale are used.
    class_names : list of str
        The classes.
    n_ctx, class_specific_ctx, ctx_init, generator
        See :class:`~modal_vlm.model.prompt_learner.PromptLearner`.
    template : str
        Zero-shot prompt, ``{}`` is replaced by the class name.
    train_visual_norm : bool
        Adapt the image encoder's normalisation layers (see
        :func:`~modal_vlm.model.training_data.norm_adapted_copy`).

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
        self.logit_scale = backbone.logit_scale
        self.register_buffer("zero_shot_features", zero_shot_text_features(backbone.text, class_names, template))
        self.init_learned_text(backbone, class_names, n_ctx, class_specific_ctx, ctx_init, generator, template)
        self.register_buffer("prompt_trained", torch.tensor(False))
        self.visual = norm_adapted_copy(backbone.visual) if train_visual_norm else None
        self.class_names = list(class_names)
        self.backbone_key = backbone.key
        self._eval_text_features = None
        self._train_text_features = None
        self.register_state_dict_post_hook(_keep_learned_tensors)

    def init_learned_text(self, backbone, class_names, n_ctx, class_specific_ctx, ctx_init, generator, template):
        """Create what is trained: here CoOp's :class:`~modal_vlm.model.prompt_learner.PromptLearner`
        (``prompt_learner``). A subclass that learns the class text features another way
        overrides this and :meth:`learned_text_features` (see
        :class:`~modal_vlm.model.linear_probe.LinearProbeCLIP`); ``zero_shot_features`` exists already."""
        self.prompt_learner = PromptLearner(backbone.text, class_names, n_ctx, class_specific_ctx,
                                            ctx_init, generator, template)

    # -- saved state: what was learned, and what it was learned for ---------------------------

    def learned_keys(self) -> list[str]:
        """Names of the tensors :meth:`state_dict` holds (without any prefix).

        Returns
        -------
        list of str
            The trainable parameters, ``"prompt_trained"`` and ``"_extra_state"``.
        """
        return [name for name, param in self.named_parameters() if param.requires_grad] + \
            ["prompt_trained", "_extra_state"]

    def describe(self) -> dict:
        """What a learned state depends on: it loads only into a module with the same description.

        Returns
        -------
        dict
            ``class_names``, ``backbone`` (the backbone's key), ``n_ctx``,
            ``class_specific_ctx`` and ``adapts_visual``.
        """
        return {"class_names": self.class_names, "backbone": self.backbone_key,
                "n_ctx": self.prompt_learner.n_ctx, "class_specific_ctx": self.prompt_learner.ctx.dim() == 3,
                "adapts_visual": self.visual is not None}

    def get_extra_state(self) -> torch.Tensor:
        # JSON bytes as a uint8 tensor: safetensors files, which hold tensors only, keep it too.
        return torch.from_numpy(np.frombuffer(json.dumps(self.describe()).encode(), dtype=np.uint8).copy())

    def set_extra_state(self, state) -> None:
        differences = self.mismatches({"_extra_state": state})
        if differences:
            raise ValueError(f"The saved prompt does not fit this model: {'; '.join(differences)}.")

    def mismatches(self, state_dict) -> list[str]:
        """Why ``state_dict`` cannot load here: ``"key: saved -> here"`` for each difference.

        Parameters
        ----------
        state_dict : dict
            A :meth:`state_dict` of a ``PromptedCLIP``.

        Returns
        -------
        list of str
            Empty when the state fits this module.
        """
        if "_extra_state" not in state_dict:
            return ["it is not a saved modal-vlm prompt (no description of what it was learned for)"]
        saved = json.loads(bytes(np.asarray(state_dict["_extra_state"], dtype=np.uint8)).decode())
        here = self.describe()
        return [f"{key}: {saved.get(key)!r} -> {here[key]!r}" for key in here if saved.get(key) != here[key]]

    def train(self, mode: bool = True):
        if mode:
            self._eval_text_features = None  # the context is about to change
        self._train_text_features = None  # holds a graph: never kept beyond its step
        super().train(mode)
        if self.visual is not None:
            self.visual.eval()  # only affine parameters adapt; BatchNorm statistics stay frozen
        return self

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load a learned state (see the class docstring); frozen tensors are never written.

        Parameters
        ----------
        state_dict : dict
            As :meth:`state_dict` returns it.
        strict : bool, default=True
            Refuse a state that lacks a learned tensor or holds others.
        assign : bool, default=False
            As for :meth:`torch.nn.Module.load_state_dict`.

        Returns
        -------
        NamedTuple
            ``missing_keys`` and ``unexpected_keys`` among the learned tensors.

        Raises
        ------
        ValueError
            The state was learned for other classes, another backbone or another context
            shape, or (``strict``) its tensors are not the learned ones.
        """
        learned = self.learned_keys()
        differences = self.mismatches(state_dict)
        unexpected = sorted(set(state_dict) - set(learned))
        missing = sorted(set(learned) - set(state_dict))
        if differences or (strict and (unexpected or missing)):
            problems = differences + [f"missing learned tensors {missing}"] * bool(missing) + \
                [f"tensors that are not learned here {unexpected[:5]}"] * bool(unexpected)
            raise ValueError(f"The saved prompt does not fit this model: {'; '.join(problems)}.")
        self._eval_text_features = None
        result = super().load_state_dict({k: v for k, v in state_dict.items() if k in learned},
                                         strict=False, assign=assign)
        return type(result)(missing, unexpected)

    def learned_text_features(self) -> torch.Tensor:
        """Normalised text features ``(C, D)`` of the learned prompts (recomputed; with grad)."""
        return F.normalize(self.prompt_learner(), dim=-1)

    def text_features(self) -> torch.Tensor:
        """Class text features ``(C, D)`` currently in use (zero-shot until trained)."""
        if not bool(self.prompt_trained):
            return self.zero_shot_features
        if self.training or torch.is_grad_enabled():
            # Kept for prompt_drift(): the regulariser reuses this step's text forward pass.
            self._train_text_features = self.learned_text_features()
            return self._train_text_features
        if self._eval_text_features is None:
            self._eval_text_features = self.learned_text_features()
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
