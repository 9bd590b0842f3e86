"""Any open_clip model as a :class:`~modal_vlm.backbones.base.Backbone`.

``pretrained`` is what open_clip takes: a tag such as ``"openai"`` (downloaded by open_clip
from its hub on first use, then cached by it) or the path of a local weights file.
``"random"`` builds the architecture with seeded random weights (tests, debugging).

Offline, tagged weights that are not in the local cache cannot be had: open_clip would spend
about a minute in the hub client's retries and end in a long traceback. Before it is asked,
:func:`check_weights_reachable` looks in the cache and, when the weights are not there,
tries the download host once (:data:`HUB_TIMEOUT` seconds): with ``HF_HUB_OFFLINE`` set or
the host unreachable it raises at once, naming the remedies. Cached weights load without
the network.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import urllib.parse
import urllib.request

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


#: Seconds to wait for the weights' download host before calling it unreachable.
HUB_TIMEOUT = 3.0
#: What an offline user can do instead, said by every "cannot download" error.
OFFLINE_REMEDIES = ("Offline, use the offline model (model_name='linear-conse-efficientnet-lite0-minilm', "
                    "--model linear-conse-efficientnet-lite0-minilm) or a local weights file "
                    "(pretrained='/path/to/weights.pt', --pretrained FILE)")


def _hub_files(cfg: dict) -> tuple[str, list[str]] | None:
    """``(repo id, file names open_clip tries in order)`` of a hub-hosted tag, else None."""
    hub = cfg.get("hf_hub", "")
    if not hub:
        return None
    from open_clip.pretrained import HF_WEIGHTS_NAME, _get_safe_alternatives

    repo, filename = os.path.split(hub)
    filename = filename or HF_WEIGHTS_NAME
    return repo, [*_get_safe_alternatives(filename), filename]


def _cached_weights(cfg: dict) -> bool:
    """Whether open_clip finds the weights of ``cfg`` in its local caches."""
    files = _hub_files(cfg)
    if files is not None:
        from huggingface_hub import try_to_load_from_cache

        repo, names = files
        return any(isinstance(try_to_load_from_cache(repo, name), str) for name in names)
    url = cfg.get("url", "")
    return bool(url) and os.path.isfile(os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url)))


def _hub_offline_flag() -> bool:
    from huggingface_hub import constants

    # The hub client reads the variable once, at import; a later change still means "offline".
    return constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _unreachable(url: str) -> str | None:
    """Why ``url``'s host (or the proxy for it) cannot be connected to; None if it can."""
    parsed = urllib.parse.urlparse(url)
    host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxied = urllib.parse.urlparse(proxy if "//" in proxy else f"//{proxy}")
        host, port = proxied.hostname, proxied.port or 80
    try:
        socket.create_connection((host, port), timeout=HUB_TIMEOUT).close()
    except OSError as exc:
        return f"{host}:{port} cannot be reached ({exc.strerror or exc})"
    return None


def check_weights_reachable(model_name: str, pretrained: str) -> bool:
    """Raise at once if open_clip would have to download ``pretrained`` and cannot.

    Parameters
    ----------
    model_name : str
        An open_clip architecture.
    pretrained : str
        One of its published tags.

    Returns
    -------
    bool
        True when the weights are in the local cache (no download needed), False when they
        will be downloaded.

    Raises
    ------
    ConnectionError
        The weights are not cached and ``HF_HUB_OFFLINE`` is set or the download host does
        not answer within :data:`HUB_TIMEOUT` seconds; the one-line message names the
        remedies (the offline model, a local weights file).
    """
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg or cfg.get("file") or _cached_weights(cfg):
        return True
    if _hub_files(cfg) is not None:
        from huggingface_hub import constants

        reason = "HF_HUB_OFFLINE is set" if _hub_offline_flag() else _unreachable(constants.ENDPOINT)
    else:
        reason = _unreachable(cfg["url"])
    if reason is not None:
        raise ConnectionError(f"cannot download the open_clip weights {model_name} / pretrained={pretrained!r}: "
                              f"they are not in the local cache and {reason}. {OFFLINE_REMEDIES}.")
    return False


@contextlib.contextmanager
def _hub_offline():
    """The hub client in offline mode: cached weights load without a round trip (offline,
    each one costs open_clip tens of seconds of retries)."""
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


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

    Raises
    ------
    ConnectionError
        Tagged weights that are not cached cannot be downloaded (see
        :func:`check_weights_reachable`).

    Examples
    --------
    >>> backbone = create_open_clip_backbone("tiny-vit", "random")
    >>> backbone.encode_text(["a photo of a cat."]).shape
    torch.Size([1, 32])
    """
    pretrained = default_pretrained(model_name) if pretrained is None else str(pretrained)
    check_pretrained(model_name, pretrained)
    tagged = pretrained != RANDOM and not os.path.isfile(pretrained)
    cached = tagged and check_weights_reachable(model_name, pretrained)
    with torch.random.fork_rng(devices=[]), _quiet_random_init(pretrained), \
            (_hub_offline() if cached else contextlib.nullcontext()):
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
