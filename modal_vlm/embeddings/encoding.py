"""Encode images with a frozen backbone, through the embedding cache.

One encoding pass over the pool is the library's cost floor, so the pipeline keeps the image
encoder busy:

* **decoding in parallel**: worker threads read, decode and preprocess images a few batches
  ahead of the encoder (Pillow and torch release the GIL while they work), in order, so the
  embeddings are the same whatever the number of threads;
* **reduced-size JPEG decoding**: a JPEG file much larger than the model's input is decoded
  at a DCT scale of 1/2, 1/4 or 1/8 (Pillow's ``Image.draft``), keeping at least
  :data:`DRAFT_MARGIN` times the backbone's :attr:`~modal_vlm.backbones.Backbone.resize_size`
  on its shorter side (``jpeg_draft``);
* **the encoder** runs under ``torch.inference_mode`` on channels-last batches, in float32 or,
  as an option, under ``torch.autocast`` in bfloat16 or float16 (``encode_dtype``); on a
  GPU, batches travel through pinned memory with non-blocking copies.

What changes the numbers is part of the embedding cache key (:func:`embedding_key`).
:func:`encode_items` encodes a list of images without a cache (one worker's share of a
distributed encoding); :func:`encode_images` adds the cache.
"""
from __future__ import annotations

import collections
import contextlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from tqdm.auto import tqdm

from .._validation import check_int
from .cache import EmbeddingCache
from .inputs import as_image_items

#: Values of ``encode_dtype`` (None means "float32").
ENCODE_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: JPEG files are decoded at a reduced size whose shorter side keeps at least this many times
#: the backbone's ``resize_size``, so the final resize still shrinks the image 3x or more and
#: the DCT scaling's block averages span at most a third of an output pixel. Margin 2 (what
#: Pillow's ``thumbnail`` uses) changed the offline model's embeddings of large photos
#: markedly more (``benchmarks/results/encode_fidelity_*.md``).
DRAFT_MARGIN = 3
#: Most decoding threads :func:`default_workers` starts.
MAX_WORKERS = 8


def check_encode_dtype(encode_dtype) -> torch.dtype | None:
    """The autocast dtype of ``encode_dtype``, None for float32.

    Parameters
    ----------
    encode_dtype : {None, "float32", "bfloat16", "float16"}
        Precision of the image encoder.

    Returns
    -------
    torch.dtype or None
        ``torch.bfloat16`` or ``torch.float16``; None for float32 (no autocast).

    Raises
    ------
    ValueError
        For any other value (the message lists the valid ones).

    Examples
    --------
    >>> check_encode_dtype("bfloat16")
    torch.bfloat16
    >>> check_encode_dtype(None) is None
    True
    """
    if encode_dtype is None:
        return None
    if not isinstance(encode_dtype, str) or encode_dtype not in ENCODE_DTYPES:
        raise ValueError(f"encode_dtype must be None or one of {list(ENCODE_DTYPES)}, got {encode_dtype!r}.")
    return ENCODE_DTYPES[encode_dtype]


def draft_size(backbone, jpeg_draft: bool = True) -> int | None:
    """Smallest shorter side, in pixels, a JPEG file is decoded at; None for full size.

    Parameters
    ----------
    backbone : Backbone
        Its ``resize_size`` sets the size (None: always full size).
    jpeg_draft : bool, default=True
        False always decodes at full size.

    Returns
    -------
    int or None
        ``DRAFT_MARGIN * backbone.resize_size``, or None.

    Examples
    --------
    >>> from modal_vlm.backbones import get_backbone
    >>> draft_size(get_backbone("tiny-vit")), draft_size(get_backbone("tiny-vit"), False)
    (96, None)
    """
    if not jpeg_draft or backbone.resize_size is None:
        return None
    return DRAFT_MARGIN * backbone.resize_size


def embedding_key(backbone, *, encode_dtype=None, jpeg_draft: bool = True) -> str:
    """The embedding cache key: the backbone's weights and whatever else changes the numbers.

    Channels-last batches, ``inference_mode``, the batch size and the number of decoding
    threads change embeddings at most in float32's last bits (as running on another CPU
    does), so they are not part of it; reduced-size decoding and mixed precision are.

    Parameters
    ----------
    backbone : Backbone
        Its ``key`` identifies the weights and the input size.
    encode_dtype : {None, "float32", "bfloat16", "float16"}, default=None
        Precision of the image encoder.
    jpeg_draft : bool, default=True
        Whether large JPEG files are decoded at a reduced size.

    Returns
    -------
    str
        ``backbone.key``, then ``"|jpeg-draft<margin>x"`` where reduced-size decoding applies
        and ``"|<dtype>"`` for mixed precision.

    Raises
    ------
    ValueError
        Unknown ``encode_dtype``.

    Examples
    --------
    >>> from modal_vlm.backbones import get_backbone
    >>> embedding_key(get_backbone("tiny-vit"), encode_dtype="bfloat16")
    'tiny-vit|random-seed0|32px|jpeg-draft3x|bfloat16'
    >>> embedding_key(get_backbone("tiny-vit"), jpeg_draft=False)
    'tiny-vit|random-seed0|32px'
    """
    key = backbone.key
    if draft_size(backbone, jpeg_draft) is not None:
        key += f"|jpeg-draft{DRAFT_MARGIN}x"
    if check_encode_dtype(encode_dtype) is not None:
        key += f"|{encode_dtype}"
    return key


def default_workers() -> int:
    """Decoding threads used by default: one per CPU core this process may use, at most 8.

    Returns
    -------
    int
        ``min(MAX_WORKERS, number of usable cores)``.

    Examples
    --------
    >>> 1 <= default_workers() <= MAX_WORKERS
    True
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores))


def check_workers(num_workers) -> int:
    """The number of decoding threads ``num_workers`` asks for.

    Parameters
    ----------
    num_workers : int or None
        None for :func:`default_workers`, 0 for the calling thread, or a count.

    Returns
    -------
    int
        The count (0: no threads).

    Raises
    ------
    ValueError
        If ``num_workers`` is neither None nor an int >= 0.

    Examples
    --------
    >>> check_workers(0), check_workers(None) == default_workers()
    (0, True)
    """
    if num_workers is None:
        return default_workers()
    if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 0:
        raise ValueError(f"num_workers must be None or an int >= 0, got {num_workers!r}.")
    return int(num_workers)


def preprocessed(items, preprocess, *, decode_size=None, num_workers=None, prefetch=128):
    """The preprocessed tensor of each item, in order, decoded by worker threads.

    At most ``prefetch`` images are in flight; the first failure (in the order of ``items``)
    is raised as it was raised in the worker (``FileNotFoundError`` or ``ValueError``
    naming the file). The threads end with the generator: when it is exhausted, closed, or
    raises.

    Parameters
    ----------
    items : list of ImageItem
        The images.
    preprocess : callable
        The backbone's transform of a PIL image.
    decode_size : int, optional
        See :meth:`modal_vlm.embeddings.inputs.ImageItem.to_tensor`.
    num_workers : int, optional
        Decoding threads; 0 decodes in the calling thread; None: :func:`default_workers`.
    prefetch : int, default=128
        Images decoded ahead of the consumer.

    Returns
    -------
    generator of torch.Tensor of float32 of shape (3, H, W)
        One tensor per item, in order.

    Raises
    ------
    ValueError
        Invalid ``num_workers`` (at once, before any decoding).

    Examples
    --------
    >>> import numpy as np
    >>> from modal_vlm.backbones import get_backbone
    >>> from modal_vlm.embeddings.inputs import as_image_items
    >>> items = as_image_items(np.zeros((3, 40, 40, 3), np.uint8))
    >>> [tuple(t.shape) for t in preprocessed(items, get_backbone("tiny-vit").preprocess)]
    [(3, 32, 32), (3, 32, 32), (3, 32, 32)]
    """
    num_workers = check_workers(num_workers)
    if num_workers == 0:
        return (item.to_tensor(preprocess, decode_size=decode_size) for item in items)
    return _decoded_by_threads(items, preprocess, decode_size, num_workers, max(1, prefetch))


def _decoded_by_threads(items, preprocess, decode_size, num_workers, prefetch):
    pending = collections.deque()
    with ThreadPoolExecutor(num_workers, thread_name_prefix="modal-vlm-decode") as pool:
        try:
            for item in items:
                if len(pending) >= prefetch:
                    yield pending.popleft().result()
                pending.append(pool.submit(item.to_tensor, preprocess, decode_size=decode_size))
            while pending:
                yield pending.popleft().result()
        finally:  # an error or an abandoned generator: no decoding after it
            for future in pending:
                future.cancel()


def _fingerprints(items, num_workers) -> list[bytes]:
    """The items' fingerprints; files are read and hashed by threads (both release the GIL)."""
    files = [i for i, item in enumerate(items) if item.kind == "path"]
    if num_workers == 0 or len(files) < 2:
        return [item.fingerprint() for item in items]
    keys = [None if item.kind == "path" else item.fingerprint() for item in items]
    with ThreadPoolExecutor(num_workers, thread_name_prefix="modal-vlm-decode") as pool:
        for i, key in zip(files, pool.map(lambda i: items[i].fingerprint(), files)):
            keys[i] = key
    return keys


def _batch_on(tensors, device) -> torch.Tensor:
    """Stack ``tensors`` into a channels-last batch on ``device``.

    On a GPU through pinned memory and a non-blocking copy: the caching host allocator keeps
    the pinned block until the copy is done, and the encoder runs on the same stream.
    """
    shape = (len(tensors), *tensors[0].shape)
    if device.type == "cuda":
        pinned = torch.stack(tensors, out=torch.empty(shape, dtype=tensors[0].dtype, pin_memory=True))
        return pinned.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    batch = torch.empty(shape, dtype=tensors[0].dtype, memory_format=torch.channels_last)
    return torch.stack(tensors, out=batch).to(device)


def _warn_if_emulated(dtype, device) -> None:
    if dtype is None or device.type not in ("cpu", "cuda"):
        return
    if device.type == "cuda":
        native = dtype == torch.float16 or torch.cuda.is_bf16_supported(including_emulation=False)
    elif dtype == torch.bfloat16:
        native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    else:
        native = torch.ops.mkldnn._is_mkldnn_fp16_supported()
    if not native:
        warnings.warn(f"encode_dtype={str(dtype).removeprefix('torch.')!r}: this {device.type.upper()} has no "
                      "native support for it, so the image encoder runs emulated, slower than in float32.",
                      RuntimeWarning, stacklevel=3)


def input_size(backbone) -> tuple[int, int]:
    """``(H, W)`` of the tensors the backbone's image encoder takes: its ``preprocess`` output.

    Parameters
    ----------
    backbone : Backbone
        Provides ``preprocess``.

    Returns
    -------
    tuple of int
        Height and width, in pixels.

    Examples
    --------
    >>> from modal_vlm.backbones import get_backbone
    >>> input_size(get_backbone("tiny-vit"))
    (32, 32)
    """
    size = getattr(backbone, "_input_size", None)
    if size is None:
        from PIL import Image

        size = tuple(int(n) for n in backbone.preprocess(Image.new("RGB", (64, 48))).shape[-2:])
        backbone._input_size = size
    return size


def embedding_width(backbone) -> int:
    """The size of the backbone's embeddings (its joint image-text space).

    Parameters
    ----------
    backbone : Backbone
        Provides the text encoder (the image encoder's output has the same size).

    Returns
    -------
    int
        The number of columns of an embedding.

    Examples
    --------
    >>> from modal_vlm.backbones import get_backbone
    >>> embedding_width(get_backbone("tiny-vit"))
    32
    """
    width = getattr(backbone, "_embedding_width", None)
    if width is None:
        width = backbone._embedding_width = int(backbone.encode_text(["a photo."]).shape[1])
    return width


def check_tensor_sizes(backbone, items, names) -> None:
    """Raise ``ValueError`` naming the preprocessed tensors whose size is not the backbone's input.

    Parameters
    ----------
    backbone : Backbone
        The encoder the tensors are meant for.
    items : list of ImageItem
        The images; only ``"tensor"`` items are checked.
    names : callable
        ``names(i)``: how an error names item ``i`` (e.g. ``"X[3]"``).

    Raises
    ------
    ValueError
        A tensor of another size (the encoder would fail inside torch, or silently resize).
    """
    expected = input_size(backbone)
    for i, item in enumerate(items):
        if item.kind == "tensor" and tuple(item.value.shape[-2:]) != expected:
            raise ValueError(f"{names(i)}: a preprocessed tensor of shape {tuple(item.value.shape)}, but this "
                             f"backbone takes (3, {expected[0]}, {expected[1]}) (its preprocess output). Pass "
                             "images, or tensors made by backbone.preprocess.")


def encode_batches(backbone, items, *, batch_size=64, visual=None, encode_dtype=None, jpeg_draft=True,
                   num_workers=None):
    """The L2-normalised embeddings of ``items``, batch by batch, in order.

    No cache: every item is encoded. Worker threads decode and preprocess the next batches
    while the encoder runs on this one (see the module docstring).

    Parameters
    ----------
    backbone : Backbone
        Provides ``preprocess``, ``resize_size`` and the image encoder.
    items : list of ImageItem
        The images (:func:`modal_vlm.embeddings.inputs.as_image_items`).
    batch_size : int, default=64
        Images per encoder forward pass.
    visual : nn.Module, optional
        Image encoder to use instead of ``backbone.visual`` (an adapted copy).
    encode_dtype : {None, "float32", "bfloat16", "float16"}, default=None
        None and ``"float32"`` run the encoder in float32; the others under
        ``torch.autocast`` in that dtype.
    jpeg_draft : bool, default=True
        Decode large JPEG files at a reduced size (:func:`draft_size`).
    num_workers : int, optional
        Decoding threads (None: :func:`default_workers`; 0: decode in this thread).

    Returns
    -------
    generator of ndarray of float32 of shape (n_batch, D)
        Embeddings of the next ``batch_size`` items (fewer in the last batch). A missing or
        unreadable image file raises ``FileNotFoundError`` or ``ValueError`` (naming it)
        when its batch is due, after the batches before it.

    Raises
    ------
    ValueError
        Invalid ``batch_size``, ``encode_dtype`` or ``num_workers`` (at once).
    """
    check_int("batch_size", batch_size)
    dtype = check_encode_dtype(encode_dtype)
    visual = backbone.visual if visual is None else visual
    device = next(visual.parameters()).device
    _warn_if_emulated(dtype, device)
    tensors = preprocessed(items, backbone.preprocess, decode_size=draft_size(backbone, jpeg_draft),
                           num_workers=num_workers, prefetch=2 * batch_size)
    return _encoded(visual, tensors, int(batch_size), device, dtype)


def _encoded(visual, tensors, batch_size, device, dtype):
    with contextlib.closing(tensors):  # closing it ends the decoding threads
        batch = []
        for tensor in tensors:
            batch.append(tensor)
            if len(batch) == batch_size:
                yield _encode_batch(visual, batch, device, dtype)
                batch = []
        if batch:
            yield _encode_batch(visual, batch, device, dtype)


def _encode_batch(visual, tensors, device, dtype) -> np.ndarray:
    precision = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with torch.inference_mode(), precision:
        features = visual(_batch_on(tensors, device))
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()


def encode_items(backbone, items, *, batch_size=64, visual=None, encode_dtype=None, jpeg_draft=True,
                 num_workers=None) -> np.ndarray:
    """L2-normalised embeddings of every item, without a cache.

    The in-process encoder: what a worker of a distributed encoding runs on its share.
    Parameters as :func:`encode_batches`.

    Parameters
    ----------
    backbone : Backbone
        Provides ``preprocess``, ``resize_size`` and the image encoder.
    items : list of ImageItem
        The images.
    batch_size : int, default=64
        Images per encoder forward pass.
    visual : nn.Module, optional
        Image encoder to use instead of ``backbone.visual``.
    encode_dtype : {None, "float32", "bfloat16", "float16"}, default=None
        Precision of the image encoder.
    jpeg_draft : bool, default=True
        Decode large JPEG files at a reduced size.
    num_workers : int, optional
        Decoding threads.

    Returns
    -------
    ndarray of float32 of shape (len(items), D)
        One unit-norm row per item, in order.

    Examples
    --------
    >>> import numpy as np
    >>> from modal_vlm.backbones import get_backbone
    >>> from modal_vlm.embeddings.inputs import as_image_items
    >>> items = as_image_items(np.zeros((3, 32, 32, 3), np.uint8))
    >>> encode_items(get_backbone("tiny-vit"), items, num_workers=2).shape
    (3, 32)
    """
    check_tensor_sizes(backbone, items, lambda i: f"items[{i}]")
    batches = list(encode_batches(backbone, items, batch_size=batch_size, visual=visual,
                                  encode_dtype=encode_dtype, jpeg_draft=jpeg_draft, num_workers=num_workers))
    if not batches:
        raise ValueError("items is empty: there are no images to encode.")
    return np.concatenate(batches)


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
        <modal_vlm.embeddings.inputs.ImageItem.describe>`).

    Raises
    ------
    ValueError
        Some row is not finite.

    Examples
    --------
    >>> import torch
    >>> check_finite_embeddings(torch.tensor([[1.0, 0.0], [float("nan"), 0.0]]), ["X[0]", "X[1]"])
    ... # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    ValueError: The image encoder returned NaN or infinite embeddings for X[1]; check these images and the
    encoder's weights.
    """
    bad = ~torch.isfinite(features).all(dim=1)
    if bad.any():
        named = [names[i] for i in torch.nonzero(bad).flatten().tolist()]
        more = f" (and {len(named) - 5} more)" if len(named) > 5 else ""
        raise ValueError(f"The image encoder returned NaN or infinite embeddings for {', '.join(named[:5])}{more}; "
                         "check these images and the encoder's weights.")


def encode_images(backbone, X, *, cache: EmbeddingCache, batch_size: int = 64, verbose: int = 1,
                  visual=None, encode_dtype=None, jpeg_draft: bool = True, num_workers=None) -> np.ndarray:
    """L2-normalised image embeddings of ``X``, encoding only images the cache lacks.

    Parameters
    ----------
    backbone : Backbone
        Provides ``preprocess`` and the image encoder.
    X : images
        Any input accepted by :func:`modal_vlm.embeddings.inputs.as_image_items`.
    cache : EmbeddingCache
        Cache of this backbone and these settings (its key from :func:`embedding_key` with
        the same ``encode_dtype`` and ``jpeg_draft``); new embeddings are added to it,
        batch by batch.
    batch_size : int
        Images per encoder forward pass.
    verbose : int
        0 silences the progress bar; otherwise it appears when encoding takes over 2 s.
    visual : nn.Module, optional
        Image encoder to use instead of ``backbone.visual`` (an adapted copy).
    encode_dtype : {None, "float32", "bfloat16", "float16"}, default=None
        Precision of the image encoder (see :func:`encode_batches`).
    jpeg_draft : bool, default=True
        Decode large JPEG files at a reduced size (see :func:`draft_size`).
    num_workers : int, optional
        Decoding threads (None: :func:`default_workers`; 0: decode in this thread).

    Returns
    -------
    ndarray of float32 of shape (n_images, D)
        One unit-norm row per image of ``X``, in order (duplicates included).

    Raises
    ------
    FileNotFoundError, ValueError
        A missing or unreadable image file (named in the message), invalid settings.

    Examples
    --------
    >>> import numpy as np
    >>> from modal_vlm.backbones import get_backbone
    >>> backbone = get_backbone("tiny-vit")
    >>> cache = EmbeddingCache(embedding_key(backbone))
    >>> encode_images(backbone, np.zeros((3, 32, 32, 3), np.uint8), cache=cache, verbose=0).shape
    (3, 32)
    """
    items = as_image_items(X)
    check_tensor_sizes(backbone, items, lambda i: f"X[{i}]")
    keys = _fingerprints(items, check_workers(num_workers))
    found, _ = cache.get(keys)
    todo = {}  # first index of each missing fingerprint: duplicates in X are encoded once
    for i in np.flatnonzero(~found):
        todo.setdefault(keys[i], i)
    todo = list(todo.values())
    batches = encode_batches(backbone, [items[i] for i in todo], batch_size=batch_size, visual=visual,
                             encode_dtype=encode_dtype, jpeg_draft=jpeg_draft, num_workers=num_workers)
    with tqdm(total=len(todo), desc="encoding images", unit="img", delay=2.0,
              disable=(not verbose or not todo) or None, leave=False) as bar, contextlib.closing(batches):
        start = 0
        for features in batches:
            chunk = todo[start:start + len(features)]
            check_finite_embeddings(torch.from_numpy(features), [items[i].describe(i) for i in chunk])
            cache.add([keys[i] for i in chunk], features)
            start += len(features)
            bar.update(len(features))
    found, embeddings = cache.get(keys)
    return embeddings


__all__ = [
    "DRAFT_MARGIN", "ENCODE_DTYPES", "check_encode_dtype", "check_finite_embeddings", "check_tensor_sizes",
    "check_workers", "embedding_width", "input_size",
    "default_workers", "draft_size", "embedding_key", "encode_batches", "encode_images", "encode_items",
    "preprocessed",
]
