"""Image inputs: what users may pass as ``X``, validated, fingerprinted and loaded.

Accepted (see :func:`as_image_items`):

* image file paths: a list, tuple or 1-d array of ``str`` / ``os.PathLike``;
* PIL images: a list of ``PIL.Image.Image``;
* raw pixels: an integer array ``(n, H, W, 3)``, ``(n, H, W, 4)`` (RGBA, converted to RGB
  as RGBA files are) or ``(n, H, W)`` (grey, converted to RGB) with values in 0..255;
* preprocessed tensors: a float ``torch.Tensor`` or array ``(n, 3, H, W)``, already resized
  and normalised for the backbone (used as they are; NaN or infinite values, and sizes other
  than the backbone's input, are refused).

Boolean arrays are refused: a mask is not an image.

One image is a batch of one: ``X[None]`` or ``[image]``. Image files and PIL images in any
mode are converted to 8-bit RGB, 16-bit grey ones scaled (not clipped) to 8 bits, and turned
upright as their EXIF orientation says (phone photos), as a browser shows them.

A list may mix these per element. Each item gets a content fingerprint (a 16-byte BLAKE2b
digest of its pixels, file bytes or tensor values) that keys the embedding cache, so the same
image is encoded once whichever form it arrives in again.

A JPEG file much larger than the model's input can be decoded at a reduced size (libjpeg's
DCT scaling through Pillow's ``Image.draft``), never below the size the backbone resizes it
to: see ``decode_size`` of :meth:`ImageItem.to_tensor`.
"""
from __future__ import annotations

import hashlib
import io
import os

import numpy as np
import torch
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from .._files import error_without_path

#: path -> (file identity, digest). The identity is size, mtime, inode and ctime: a file
#: rewritten with its size and mtime kept (``cp -p``, ``rsync -t``, ``tar x``) gets a new ctime
#: (or inode) from the system, which no program can set, so it is read and hashed again.
_PATH_DIGESTS: dict[str, tuple[tuple, bytes]] = {}


def _digest(*parts) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part if isinstance(part, (bytes, memoryview)) else str(part).encode())
    return h.digest()


class ImageItem:
    """One image: a content fingerprint and a way to turn it into the backbone's input.

    Parameters
    ----------
    value : str, PIL.Image.Image, ndarray or tensor
        The image as given: a path, a PIL image, raw pixels or a preprocessed tensor.
    kind : {"path", "pil", "pixels", "tensor"}
        Which of these ``value`` is.
    """

    __slots__ = ("value", "kind")

    def __init__(self, value, kind):
        self.value, self.kind = value, kind

    def fingerprint(self) -> bytes:
        if self.kind == "path":
            return _path_digest(self.value)
        if self.kind == "pil":
            im = self.value
            turned = _orientation(im)   # part of the key only where it turns the image
            return _digest(b"pixels", im.mode, im.size, im.tobytes(),
                           *([b"exif-orientation", turned] if turned else []))
        array = np.ascontiguousarray(self.value)
        return _digest(self.kind.encode(), array.dtype.str, array.shape, memoryview(array).cast("B"))

    def to_tensor(self, preprocess, *, decode_size=None) -> torch.Tensor:
        """The preprocessed ``(3, H, W)`` tensor.

        Parameters
        ----------
        preprocess : callable
            The backbone's transform of an RGB PIL image; not applied to a ``"tensor"``
            item, which is already preprocessed.
        decode_size : int, optional
            Decode a JPEG file at the smallest of libjpeg's DCT scales (1/2, 1/4, 1/8)
            whose shorter side still has at least this many pixels (Pillow's
            ``Image.draft``); other files and images are used as they are. None decodes at
            full size.

        Returns
        -------
        torch.Tensor of float32 of shape (3, H, W)
            The image as the backbone's encoder takes it.
        """
        if self.kind == "tensor":
            return torch.as_tensor(self.value, dtype=torch.float32)
        if self.kind == "path":
            image = _open_image(self.value, decode_size)
        elif self.kind == "pil":
            image = upright(self.value)
        else:  # raw pixels
            image = Image.fromarray(np.asarray(self.value, dtype=np.uint8))
        return preprocess(as_rgb(image))

    def describe(self, index) -> str:
        """How an error names this item: its file, else its position ``X[index]``.

        Parameters
        ----------
        index : int
            Position of the item in ``X``.

        Returns
        -------
        str
            ``"X[3] (/data/cat/01.png)"`` for a file, ``"X[3]"`` otherwise.
        """
        return f"X[{index}] ({self.value})" if self.kind == "path" else f"X[{index}]"


#: The EXIF tag of a photo's orientation: how to turn the stored pixels to show it upright.
EXIF_ORIENTATION = 0x0112


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation that turns ``image`` (2..8); 0 when there is none to apply."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - a damaged EXIF block: nothing to apply
        return 0
    return value if value in range(2, 9) else 0


def upright(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF orientation says (a phone photo held upright), as a
    browser shows the file; the image itself when it has no orientation to apply.

    Parameters
    ----------
    image : PIL.Image.Image
        Any image; only its EXIF orientation tag (``0x0112``) is read.

    Returns
    -------
    PIL.Image.Image
        The upright image.

    Examples
    --------
    >>> from PIL import Image
    >>> photo = Image.new("RGB", (4, 2))
    >>> photo.getexif()[EXIF_ORIENTATION] = 6   # stored sideways
    >>> upright(photo).size
    (2, 4)
    """
    return ImageOps.exif_transpose(image) if _orientation(image) else image


#: Pillow modes of 16-bit grey images (16-bit PNG and TIFF files).
_GREY_16 = ("I;16", "I;16L", "I;16B", "I;16N")


def as_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB: 16-bit grey scaled to 8 bits, every other mode through Pillow.

    Pillow's own conversion clips 16-bit grey values to 255 (a 16-bit PNG turns nearly
    white), so those are scaled here. 32-bit integer or float images have no known range:
    they are converted only if their values already lie in 0..255.

    Parameters
    ----------
    image : PIL.Image.Image
        Any mode: RGB, RGBA (alpha dropped, as open_clip does), grey, palette, 16-bit grey...

    Returns
    -------
    PIL.Image.Image
        Mode ``"RGB"``.

    Raises
    ------
    ValueError
        A 32-bit integer or float image with values outside 0..255.

    Examples
    --------
    >>> import numpy as np
    >>> from PIL import Image
    >>> grey16 = Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16))
    >>> np.asarray(as_rgb(grey16))[0, 0].tolist()
    [255, 255, 255]
    >>> np.asarray(as_rgb(Image.fromarray(np.full((2, 2), 32768, np.uint16))))[0, 0, 0]
    np.uint8(128)
    """
    if image.mode in _GREY_16:
        values = np.asarray(image).astype(np.uint32)
        return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8)).convert("RGB")
    if image.mode in ("I", "F"):
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 255):
            raise ValueError(f"a {image.mode!r}-mode (32-bit) image has values in {values.min()}..{values.max()}, "
                             "a range without a known scale to 8 bits: convert it to 8-bit RGB first.")
        return Image.fromarray(values.astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def _path_digest(path: str) -> bytes:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"Image file not found: {path}") from None
    if not os.path.isfile(path):
        raise ValueError(f"Not an image file (a directory or a device): {path}")
    identity = (stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns)
    known = _PATH_DIGESTS.get(path)
    if known is not None and known[0] == identity:
        return known[1]
    with open(path, "rb") as f:
        data = f.read()
    # A photo with an EXIF orientation is encoded turned upright, so its key says so: any
    # embedding of the file cached before (sideways) is never served. Other files' keys
    # are the digest of their bytes alone.
    turned = _file_orientation(data)
    digest = _digest(b"file", data, *([b"exif-orientation", turned] if turned else []))
    _PATH_DIGESTS[path] = (identity, digest)
    return digest


def _file_orientation(data: bytes) -> int:
    """The EXIF orientation an image file's bytes ask for (2..8), 0 for none (or no image)."""
    head = data[:1 << 16]
    if b"Exif" not in head and b"eXIf" not in head:   # no EXIF block: skip the header parse
        return 0
    try:
        with Image.open(io.BytesIO(data)) as image:
            return _orientation(image)
    except Exception:  # noqa: BLE001 - not an image: decoding it names the problem later
        return 0


def _open_image(path: str, decode_size: int | None = None) -> Image.Image:
    try:
        with Image.open(path) as image:
            if decode_size is not None and isinstance(image, JpegImagePlugin.JpegImageFile):
                # Pillow picks the largest DCT scale-down that keeps both sides >= the request,
                # so the shorter side stays >= decode_size; a no-op for images too small.
                image.draft(image.mode, (decode_size, decode_size))
            image.load()
            return upright(image)
    except FileNotFoundError:
        raise FileNotFoundError(f"Image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"Cannot read image file {path}: {error_without_path(exc, path)}") from exc


def _pixel_item(array: np.ndarray, where: str) -> ImageItem:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        raise ValueError(f"{where}: an image must be (H, W), (H, W, 3) or RGBA (H, W, 4); got shape {array.shape}.")
    if array.dtype.kind not in "ui":
        raise ValueError(
            f"{where}: raw pixels must be integers in 0..255 (got dtype {array.dtype}); "
            "pass float data only as preprocessed (n, 3, H, W) tensors."
        )
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(f"{where}: pixel values must lie in 0..255.")
        array = array.astype(np.uint8)
    return ImageItem(array, "pixels")


def _boolean_message(where: str) -> str:
    return (f"{where} is a boolean array: a mask, not an image (its True and False would become "
            "pixel values 1 and 0, a black image). Pass uint8 pixels, e.g. mask.astype(np.uint8) * 255.")


def _check_finite(array: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(f"{where}: the preprocessed tensor has {int(bad.sum())} NaN or infinite value(s); "
                         "every pixel must be a finite number.")


def _check_not_one_image(X) -> None:
    """A lone ``(H, W, 3|4)`` array or ``(3, H, W)`` tensor is one image, not a batch of
    H grey images or 3 channels."""
    one_image = (X.dtype.kind in "ui" and X.shape[-1] in (3, 4)) or (X.dtype.kind == "f" and X.shape[0] == 3)
    if X.ndim == 3 and one_image:
        raise ValueError(f"X has shape {X.shape}: that is one image, and X must be a batch of images. "
                         "Pass one image as X[None] (shape (1, ...)) or as [image].")


def _item(element, index) -> ImageItem:
    where = f"X[{index}]"
    if isinstance(element, ImageItem):
        return element
    if isinstance(element, (str, os.PathLike)):
        return ImageItem(str(os.fspath(element)), "path")  # str(): np.str_ would print as np.str_('...')
    if isinstance(element, Image.Image):
        return ImageItem(element, "pil")
    if isinstance(element, torch.Tensor):
        element = element.detach().cpu().numpy()
    array = np.asarray(element)
    if array.dtype.kind == "f":
        if array.ndim != 3 or array.shape[0] != 3:
            raise ValueError(f"{where}: a float image must be a preprocessed (3, H, W) tensor; got {array.shape}.")
        _check_finite(array, where)
        return ImageItem(array.astype(np.float32, copy=False), "tensor")
    if array.dtype.kind == "b":
        raise ValueError(_boolean_message(where))
    if array.dtype.kind in "ui":
        return _pixel_item(array, where)
    raise TypeError(f"{where}: unsupported image type {type(element).__name__}.")


def as_image_items(X) -> list[ImageItem]:
    """Validate ``X`` and split it into :class:`ImageItem` objects.

    Parameters
    ----------
    X : sequence of paths or PIL images, int array (n, H, W[, 3]), float (n, 3, H, W)
        See the module docstring.

    Returns
    -------
    list of ImageItem
        One item per image, in the order of ``X``.

    Raises
    ------
    ValueError
        Empty ``X``, a single path instead of a sequence, wrong shapes or dtypes, boolean
        arrays (masks are not images).

    Examples
    --------
    >>> import numpy as np
    >>> items = as_image_items(np.zeros((2, 8, 8, 3), dtype=np.uint8))
    >>> len(items), items[0].kind
    (2, 'pixels')
    """
    if isinstance(X, (str, os.PathLike, Image.Image)):
        raise ValueError(f"X must be a sequence of images, got a single {type(X).__name__}; wrap it in a list.")
    if hasattr(X, "to_numpy") and not isinstance(X, (np.ndarray, torch.Tensor)):
        X = X.to_numpy()  # pandas Series of paths
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    if getattr(X, "ndim", 1) != 0 and len(X) == 0:
        raise ValueError("X is empty: there are no images to encode.")
    if isinstance(X, np.ndarray) and X.dtype.kind == "b":
        raise ValueError(_boolean_message("X"))
    if isinstance(X, np.ndarray) and X.dtype.kind in "uif":
        if X.ndim not in (3, 4):
            raise ValueError(
                f"X has shape {X.shape}: expected images (n, H, W), (n, H, W, 3) or preprocessed "
                "(n, 3, H, W); feature vectors are not images."
            )
        _check_not_one_image(X)
    return [_item(element, i) for i, element in enumerate(X)]


def n_images(X) -> int:
    """Number of images in ``X`` without loading them (``len`` with a clear error).

    Parameters
    ----------
    X : images
        Paths, PIL images, uint8 arrays or preprocessed tensors.

    Returns
    -------
    int
        The number of images.

    Raises
    ------
    ValueError
        If ``X`` is one path or one PIL image instead of a sequence.
    TypeError
        If ``X`` has no length.

    Examples
    --------
    >>> n_images(["a.png", "b.png"])
    2
    """
    if isinstance(X, (str, os.PathLike, Image.Image)):
        raise ValueError(f"X must be a sequence of images, got a single {type(X).__name__}.")
    try:
        return len(X)
    except TypeError:
        raise TypeError(f"X must be a sized sequence of images, got {type(X).__name__}.") from None


__all__ = ["ImageItem", "as_image_items", "as_rgb", "n_images", "upright"]
