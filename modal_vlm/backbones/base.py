"""The two abstractions every backbone implements: a frozen :class:`Backbone` and its
:class:`TextTower`.

A backbone is a frozen vision-language model reduced to what prompt tuning needs:

* ``visual``: an ``nn.Module`` mapping a preprocessed image batch to image features;
* ``preprocess``: the transform from a PIL image to the tensor ``visual`` expects;
* ``text``: a :class:`TextTower`, i.e. a text encoder that can be fed token *embeddings*,
  which is what lets CoOp's learnable context vectors replace some of the tokens;
* ``logit_scale``: the temperature used to turn cosine similarities into logits;
* ``key``: a string that identifies the weights, used to key the embedding cache;
* ``resize_size``: the size ``preprocess`` resizes an image to, so that large JPEG files can
  be decoded at a reduced size that still has every pixel the model sees.
"""
from __future__ import annotations

import abc

import torch
import torch.nn.functional as F
from open_clip.transform import ResizeKeepRatio
from torch import nn
from torchvision import transforms


def resize_target(preprocess) -> int | None:
    """The size the first step of a torchvision ``Compose`` resizes images to, if it resizes.

    Parameters
    ----------
    preprocess : callable
        A backbone's transform of a PIL image.

    Returns
    -------
    int or None
        ``Resize(s)``: ``s`` (the shorter side); ``Resize((h, w))`` or open_clip's
        ``ResizeKeepRatio``: ``max(h, w)``; None for any other transform.

    Examples
    --------
    >>> from torchvision import transforms
    >>> resize_target(transforms.Compose([transforms.Resize(224), transforms.CenterCrop(224)]))
    224
    >>> resize_target(transforms.Compose([transforms.CenterCrop(224)])) is None
    True
    """
    steps = getattr(preprocess, "transforms", None)
    if not steps:
        return None
    first = steps[0]
    if isinstance(first, (transforms.Resize, ResizeKeepRatio)):
        size = first.size
        return int(max(size) if isinstance(size, (tuple, list)) else size)
    return None


class TextTower(nn.Module, abc.ABC):
    """A text encoder that accepts token embeddings, so prompts can be learned.

    Subclasses wrap one family of text encoders (open_clip's causal transformer, a Hugging
    Face encoder such as BERT). The prompt learner only talks to this interface, so one
    implementation of CoOp serves every family.

    Every tokenized prompt starts with one special token (``<start_of_text>`` or
    ``[CLS]``); the prompt learner relies on that to place its context vectors at
    positions ``1 .. n_ctx``.
    """

    #: Width of the token embeddings (the size of one learnable context vector).
    width: int

    @abc.abstractmethod
    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids ``(n, L)`` and attention mask ``(n, L)`` (1 = real token).

        Parameters
        ----------
        texts : list of str
            The prompts.

        Returns
        -------
        token_ids : torch.Tensor of shape (n, L)
            Token ids, padded or cut to a common length L.
        attention_mask : torch.Tensor of shape (n, L)
            1 for real tokens, 0 for padding.
        """

    @abc.abstractmethod
    def embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings ``(n, L, width)`` of ``token_ids``.

        Parameters
        ----------
        token_ids : torch.Tensor of shape (n, L)
            As returned by :meth:`tokenize`.

        Returns
        -------
        torch.Tensor of shape (n, L, width)
            The input embeddings of the tokens (before positions are added).
        """

    @abc.abstractmethod
    def encode_embeddings(
        self, embeddings: torch.Tensor, token_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Text features ``(n, D)`` (not normalised) from input embeddings.

        Parameters
        ----------
        embeddings : torch.Tensor of shape (n, L, width)
            Input embeddings, e.g. :meth:`embed_tokens`' with the context positions replaced
            by learned vectors.
        token_ids, attention_mask : torch.Tensor of shape (n, L)
            Those of the tokenized prompt whose embeddings were (partly) replaced; they
            locate padding and pooling positions.

        Returns
        -------
        torch.Tensor of shape (n, D)
            One feature per prompt, in the joint image-text space.
        """

    def train(self, mode: bool = True):
        # Frozen: dropout stays off even while the prompt around it trains.
        return super().train(False)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised features ``(n, D)`` of plain texts.

        Parameters
        ----------
        texts : list of str
            The texts.

        Returns
        -------
        torch.Tensor of shape (n, D)
            One unit-norm feature per text.
        """
        ids, mask = self.tokenize(texts)
        return F.normalize(self.encode_embeddings(self.embed_tokens(ids), ids, mask), dim=-1)


class Backbone(nn.Module):
    """A frozen vision-language model as used by :class:`~modal_vlm.ClipPromptClassifier`.

    Parameters
    ----------
    visual : nn.Module
        Maps a preprocessed image batch ``(n, 3, H, W)`` to image features ``(n, D)``.
    text : TextTower
        Text encoder producing features in the same ``D``-dimensional space.
    preprocess : callable
        PIL image -> tensor ``(3, H, W)`` accepted by ``visual``.
    logit_scale : float
        Multiplier of cosine similarities in the logits (CLIP: 100).
    key : str
        Identity of the weights (model, pretrained tag or file, image size); the embedding
        cache is keyed by it.
    train_preprocess : callable, optional
        Augmenting transform for training through the image encoder (UEO); defaults to
        ``preprocess``.
    resize_size : int, optional
        The shorter side, in pixels, that ``preprocess`` resizes an image to (for a resize
        to a fixed ``(h, w)``, the larger of the two). JPEG files are decoded at a reduced
        size no smaller than this. None derives it from a torchvision ``Compose`` whose
        first step resizes (open_clip's transforms); it stays None, and every image is
        decoded at full size, where it cannot be derived.

    Attributes
    ----------
    resize_size : int or None
        As given or derived.

    Notes
    -----
    The image encoder's 4-d weights are kept in channels-last memory format, the layout
    oneDNN's and cuDNN's fastest convolutions use; :func:`modal_vlm.embeddings.encoding.encode_items`
    feeds it channels-last batches.

    Examples
    --------
    >>> from modal_vlm.backbones import create_backbone
    >>> backbone = create_backbone("tiny-vit")
    >>> backbone.key, backbone.resize_size
    ('tiny-vit|random-seed0|32px', 32)
    """

    def __init__(self, visual, text, preprocess, logit_scale, key, train_preprocess=None,
                 resize_size=None):
        super().__init__()
        self.visual = visual.to(memory_format=torch.channels_last)
        self.text = text
        self.preprocess = preprocess
        self.train_preprocess = train_preprocess or preprocess
        self.logit_scale = float(logit_scale)
        self.key = key
        self.resize_size = resize_target(preprocess) if resize_size is None else int(resize_size)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        # Frozen encoders: dropout and BatchNorm statistics never switch to training mode.
        return super().train(False)

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image features of a preprocessed batch.

        Parameters
        ----------
        images : torch.Tensor of shape (n, 3, H, W)
            Images transformed by the backbone's ``preprocess``.

        Returns
        -------
        torch.Tensor of shape (n, D)
            One unit-norm feature per image.
        """
        return F.normalize(self.visual(images), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised features of plain texts.

        Parameters
        ----------
        texts : list of str
            The texts, e.g. ``"a photo of a cat."``.

        Returns
        -------
        torch.Tensor of shape (n, D)
            One unit-norm feature per text.

        Examples
        --------
        >>> from modal_vlm.backbones import get_backbone
        >>> features = get_backbone("tiny-vit").encode_text(["a cat", "a dog"])
        >>> tuple(features.shape)[0], round(float(features[0].norm()), 4)
        (2, 1.0)
        """
        return self.text.encode_text(texts)
