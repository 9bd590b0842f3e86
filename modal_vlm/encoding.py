"""Encode images with a frozen backbone, through the embedding cache."""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from .cache import EmbeddingCache
from .inputs import as_image_items


def check_finite_embeddings(features: torch.Tensor, names) -> None:
    """Raise ``ValueError`` naming the images whose embedding holds NaN or infinity.

    A non-finite embedding would make every probability NaN and poison training; it is
    refused before it reaches the cache.

    Parameters
    ----------
    features : torch.Tensor of shape (n, D)
        Embeddings an image encoder returned.
    names : sequence of str
        How to name each of the ``n`` images (see :meth:`ImageItem.describe
        <modal_vlm.inputs.ImageItem.describe>`).

    Raises
    ------
    ValueError
        Some row is not finite.

    Examples
    --------
    >>> import torch
    >>> check_finite_embeddings(torch.tensor([[1.0, 0.0], [float("nan"), 0.0]]), ["X[0]", "X[1]"])
    Traceback (most recent call last):
    ...
    ValueError: The image encoder returned NaN or infinite embeddings for X[1]; check these images and the encoder's weights.
    """
    bad = ~torch.isfinite(features).all(dim=1)
    if bad.any():
        named = [names[i] for i in torch.nonzero(bad).flatten().tolist()]
        more = f" (and {len(named) - 5} more)" if len(named) > 5 else ""
        raise ValueError(f"The image encoder returned NaN or infinite embeddings for {', '.join(named[:5])}{more}; "
                         "check these images and the encoder's weights.")


def encode_images(backbone, X, *, cache: EmbeddingCache, batch_size: int = 64, verbose: int = 1,
                  visual=None) -> np.ndarray:
    """L2-normalised image embeddings of ``X``, encoding only images the cache lacks.

    Parameters
    ----------
    backbone : Backbone
        Provides ``preprocess`` and the image encoder.
    X : images
        Any input accepted by :func:`modal_vlm.inputs.as_image_items`.
    cache : EmbeddingCache
        Cache of this backbone; new embeddings are added to it.
    batch_size : int
        Images per encoder forward pass.
    verbose : int
        0 silences the progress bar; otherwise it appears when encoding takes over 2 s.
    visual : nn.Module, optional
        Image encoder to use instead of ``backbone.visual`` (an adapted copy).

    Returns
    -------
    np.ndarray of shape (n_images, D), float32

    Examples
    --------
    >>> import numpy as np
    >>> from modal_vlm.backbones import get_backbone
    >>> backbone = get_backbone("tiny-vit")
    >>> cache = EmbeddingCache(backbone.key)
    >>> encode_images(backbone, np.zeros((3, 32, 32, 3), np.uint8), cache=cache, verbose=0).shape
    (3, 32)
    """
    items = as_image_items(X)
    keys = [item.fingerprint() for item in items]
    found, _ = cache.get(keys)
    todo = {}  # first index of each missing fingerprint: duplicates in X are encoded once
    for i in np.flatnonzero(~found):
        todo.setdefault(keys[i], i)
    todo = list(todo.values())
    with tqdm(total=len(todo), desc="encoding images", unit="img", delay=2.0,
              disable=(not verbose or not todo) or None, leave=False) as bar:
        for start, features in iter_encoded(backbone, [items[i] for i in todo], batch_size=batch_size,
                                            visual=visual):
            chunk = todo[start:start + len(features)]
            check_finite_embeddings(torch.from_numpy(features), [items[i].describe(i) for i in chunk])
            cache.add([keys[i] for i in chunk], features)
            bar.update(len(chunk))
    found, embeddings = cache.get(keys)
    return embeddings


@torch.no_grad()  # as a decorator: grad mode is off only while the generator runs, not between batches
def iter_encoded(backbone, items, *, batch_size: int = 64, visual=None):
    """L2-normalised embeddings of ``items``, one batch at a time, without any cache.

    The encoding itself (preprocessing, forward pass, normalisation), shared by
    :func:`encode_images` and the distributed encoder (:mod:`modal_vlm.distributed`).

    Parameters
    ----------
    backbone : Backbone
        Provides ``preprocess`` and the image encoder.
    items : list of ImageItem
        The images (:func:`modal_vlm.inputs.as_image_items`).
    batch_size : int
        Images per encoder forward pass.
    visual : nn.Module, optional
        Image encoder to use instead of ``backbone.visual``.

    Yields
    ------
    start : int
        Index in ``items`` of the batch's first image.
    features : np.ndarray of shape (batch, D), float32
        The batch's embeddings.

    Examples
    --------
    >>> import numpy as np
    >>> from modal_vlm.backbones import get_backbone
    >>> items = as_image_items(np.zeros((3, 32, 32, 3), np.uint8))
    >>> [(start, f.shape) for start, f in iter_encoded(get_backbone("tiny-vit"), items, batch_size=2)]
    [(0, (2, 32)), (2, (1, 32))]
    """
    visual = backbone.visual if visual is None else visual
    device = next(visual.parameters()).device
    for start in range(0, len(items), batch_size):
        batch = torch.stack([item.to_tensor(backbone.preprocess) for item in items[start:start + batch_size]])
        features = torch.nn.functional.normalize(visual(batch.to(device)).float(), dim=-1)
        yield start, features.cpu().numpy()
