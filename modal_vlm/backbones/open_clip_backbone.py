"""Any open_clip model as a :class:`~modal_vlm.backbones.base.Backbone`.

``pretrained`` is what open_clip takes: a tag such as ``"openai"`` (downloaded by open_clip
from its hub on first use, then cached by it) or the path of a local weights file.
``"random"`` builds the architecture with seeded random weights (tests, debugging).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os

import open_clip
import torch
from open_clip.transform import AugmentationCfg, image_transform

from .base import Backbone
from .text_towers import OpenClipTextTower

#: The tag that means "architecture only, weights from a fixed seed".
RANDOM = "random"
_RANDOM_SEED = 0


def default_pretrained(model_name: str) -> str:
    """open_clip's OpenAI weights where they exist, the first published tag otherwise."""
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if "openai" in tags:
        return "openai"
    return tags[0] if tags else RANDOM


def _weights_identity(pretrained: str) -> str:
    if pretrained == RANDOM:
        return f"{RANDOM}-seed{_RANDOM_SEED}"
    if os.path.isfile(pretrained):
        digest = hashlib.blake2b(digest_size=16)
        with open(pretrained, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return f"file-{digest.hexdigest()}"
    return pretrained


@contextlib.contextmanager
def _quiet_random_init(pretrained: str):
    """open_clip logs a warning for random weights; here they are asked for."""
    if pretrained != RANDOM:
        yield
        return
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(previous)


def check_pretrained(model_name: str, pretrained: str) -> None:
    """Raise a ``ValueError`` naming the valid choices if ``pretrained`` is neither a
    published tag of ``model_name``, ``"random"``, nor an existing file."""
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if pretrained == RANDOM or pretrained in tags or os.path.isfile(pretrained):
        return
    if os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")):
        raise FileNotFoundError(f"Weights file not found: {pretrained!r}")
    raise ValueError(
        f"Unknown pretrained weights {pretrained!r} for open_clip model {model_name!r}; "
        f"use one of {[RANDOM, *tags]} or the path of a local weights file."
    )


def augmenting_transform(preprocess_cfg: dict, image_size: int):
    """Train-time augmentation of UEO: RandomResizedCrop(scale=(0.5, 1)) + horizontal flip."""
    return image_transform(
        image_size,
        is_train=True,
        mean=preprocess_cfg.get("mean"),
        std=preprocess_cfg.get("std"),
        aug_cfg=AugmentationCfg(scale=(0.5, 1.0)),
    )


def create_open_clip_backbone(model_name, pretrained=None, *, device="cpu", image_size=None) -> Backbone:
    """Build a :class:`Backbone` from an open_clip model name and pretrained tag or file.

    Parameters
    ----------
    model_name : str
        An entry of ``open_clip.list_models()``, e.g. ``"ViT-B-32"``.
    pretrained : str, optional
        Tag (``"openai"``, ``"laion2b_s34b_b79k"``...), local weights file, or ``"random"``.
        None picks :func:`default_pretrained`.
    device : str
        Torch device.
    image_size : int, optional
        Input resolution; None keeps the model's own.

    Returns
    -------
    Backbone
        A new frozen backbone (image and text towers in eval mode, no gradients).

    Examples
    --------
    >>> backbone = create_open_clip_backbone("tiny-vit", "random")
    >>> backbone.encode_text(["a photo of a cat."]).shape
    torch.Size([1, 32])
    """
    pretrained = default_pretrained(model_name) if pretrained is None else str(pretrained)
    check_pretrained(model_name, pretrained)
    with torch.random.fork_rng(devices=[]), _quiet_random_init(pretrained):
        torch.manual_seed(_RANDOM_SEED)
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name,
            pretrained=None if pretrained == RANDOM else pretrained,
            device=device,
            force_image_size=image_size,
        )
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    text_model = getattr(model, "text", model)  # CustomTextCLIP keeps its tower in .text
    return Backbone(
        visual=model.visual,
        text=OpenClipTextTower(text_model, open_clip.get_tokenizer(model_name)),
        preprocess=preprocess,
        train_preprocess=augmenting_transform(getattr(model.visual, "preprocess_cfg", {}), size),
        logit_scale=model.logit_scale.exp().item(),
        key=f"{model_name}|{_weights_identity(pretrained)}|{size}px",
    )
