"""Data for experiments: image folders, the embedded CIFAR-10 sample of the demo, scikit-learn's
digits, and UEO's open-set splits.

Labels are integer indices into a list of class names; :data:`OOD_LABEL` (-1) marks samples
of unknown (out-of-distribution) classes.

Every selection here (images per class, known classes, the known classes of a partial
pool) follows one rule: with ``random_state=None`` it takes the *first* items in order, so
the result is deterministic without a seed; with a seed (or a ``RandomState``) it draws a
random subset, reproducibly. Selected items keep their original order.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.utils import check_random_state

from ._files import IMAGE_EXTENSIONS, find_images

#: Label of samples from unknown (out-of-distribution) classes.
OOD_LABEL = -1

#: The unlabeled-pool settings of the UEO paper, see :func:`make_open_set`.
SETTINGS = ("closed", "partial", "open", "open-partial")

#: Class names of :func:`load_digits_images`, phrased as words so text prompts read well.
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _choose(items: np.ndarray, k: int, rng: np.random.RandomState | None) -> np.ndarray:
    """``k`` of ``items``: the first ones without ``rng``, else a random subset; order kept."""
    if rng is None or k >= len(items):
        return items[:k]
    return items[np.sort(rng.choice(len(items), size=k, replace=False))]


def _rng(random_state) -> np.random.RandomState | None:
    # None keeps its module-wide meaning "take the first items" instead of sklearn's
    # "use the global RNG", so unseeded calls stay deterministic.
    return None if random_state is None else check_random_state(random_state)


def _subsample_per_class(y: np.ndarray, max_per_class: int | None, random_state) -> np.ndarray:
    """Sorted indices of at most ``max_per_class`` samples of every label in ``y``."""
    if max_per_class is None:
        return np.arange(len(y))
    if max_per_class < 1:
        raise ValueError(f"max_per_class must be a positive integer, got {max_per_class!r}")
    rng = _rng(random_state)
    chosen = [_choose(np.flatnonzero(y == label), max_per_class, rng) for label in np.unique(y)]
    return np.sort(np.concatenate(chosen))


def load_image_folder(root, classes=None, max_per_class=None, random_state=None):
    """List the images of an image-folder dataset: one sub-folder per class.

    Parameters
    ----------
    root : str or path-like
        Folder whose sub-folders are the classes, named by their class name. Images are
        found recursively inside each class folder (suffixes in ``IMAGE_EXTENSIONS`` of
        ``modal_vlm._files``; hidden files and folders left out).
    classes : sequence of str, optional
        Class folders to load, in this order (label ``i`` is ``classes[i]``). Default: every
        sub-folder of ``root``, sorted by name.
    max_per_class : int, optional
        Keep at most this many images per class.
    random_state : int, RandomState or None, default=None
        With None, the first ``max_per_class`` files (sorted by path) of each class; else a
        seeded random subset.

    Returns
    -------
    paths : ndarray of str of shape (n_images,)
        Image paths, sorted within each class, classes in label order.
    y : ndarray of int64 of shape (n_images,)
        Labels, indices into ``class_names``.
    class_names : list of str
        The class names (folder names).

    Raises
    ------
    FileNotFoundError
        If ``root`` or a requested class folder does not exist.
    ValueError
        If ``root`` has no class folder, a class folder holds no image, or ``classes``
        repeats a name.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name, count in (("cat", 3), ("dog", 2)):
    ...     (root / name).mkdir()
    ...     for i in range(count):
    ...         Image.new("RGB", (8, 8)).save(root / name / f"{i}.png")
    >>> paths, y, class_names = load_image_folder(root, max_per_class=2)
    >>> class_names, y.tolist(), pathlib.Path(paths[0]).name
    (['cat', 'dog'], [0, 0, 1, 1], '0.png')
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist or is not a folder")
    available = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not available:
        raise ValueError(f"image folder {str(root)!r} has no class sub-folders")
    if classes is None:
        class_names = available
    else:
        if isinstance(classes, str):
            raise TypeError("classes must be a sequence of class names, not one string")
        class_names = list(classes)
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"classes contains repeated names: {class_names}")
        missing = [name for name in class_names if name not in available]
        if missing:
            raise FileNotFoundError(
                f"class folder(s) {missing} not found in {str(root)!r}; available: {available}"
            )
    paths, labels = [], []
    for label, name in enumerate(class_names):
        files = find_images(root / name)
        if not files:
            raise ValueError(
                f"class folder {str(root / name)!r} holds no image "
                f"(suffixes {sorted(IMAGE_EXTENSIONS)})"
            )
        paths += files
        labels += [label] * len(files)
    y = np.asarray(labels, dtype=np.int64)
    keep = _subsample_per_class(y, max_per_class, random_state)
    return np.asarray(paths, dtype=str)[keep], y[keep], class_names


def load_digits_images(size=32, max_per_class=None, random_state=None):
    """scikit-learn's embedded handwritten digits as upscaled greyscale images.

    The 8x8 images (values 0..16) of :func:`sklearn.datasets.load_digits` ship with
    scikit-learn, which makes them an offline demo dataset. They are rescaled to 0..255 and
    resized bilinearly to ``size`` x ``size``.

    Parameters
    ----------
    size : int, default=32
        Side of the returned images in pixels.
    max_per_class : int, optional
        Keep at most this many images per digit (there are about 180).
    random_state : int, RandomState or None, default=None
        With None, the first ``max_per_class`` images of each digit; else a seeded random
        subset.

    Returns
    -------
    images : ndarray of uint8 of shape (n_images, size, size)
        Greyscale images, white digits on black.
    y : ndarray of int64 of shape (n_images,)
        The digits, indices into ``class_names``.
    class_names : list of str
        ``["zero", "one", ..., "nine"]``.

    Examples
    --------
    >>> images, y, class_names = load_digits_images(size=32, max_per_class=5)
    >>> images.shape, images.dtype, class_names[y[0]]
    ((50, 32, 32), dtype('uint8'), 'zero')
    """
    if size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    digits = load_digits()
    keep = _subsample_per_class(digits.target, max_per_class, random_state)
    grey = np.rint(digits.images[keep] * (255 / 16)).astype(np.uint8)
    images = np.stack(
        [np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in grey]
    )
    return images, digits.target[keep].astype(np.int64), list(DIGIT_NAMES)


#: The embedded CIFAR-10 sample (package data; ``scripts/make_cifar10_sample.py`` builds it).
CIFAR10_SAMPLE = Path(__file__).parent / "data" / "cifar10_sample.npz"


def load_cifar10_sample(max_pool_per_class=None, max_test_per_class=None, random_state=None):
    """A small CIFAR-10 sample that ships with the package: a pool and a test set, disjoint.

    1,500 real 32x32 photos of CIFAR-10 (Krizhevsky, 2009: "Learning Multiple Layers of
    Features from Tiny Images"), 100 pool and 50 test images per class, stored as their
    original JPEG files (1.6 MB). It is the data of ``modal-vlm demo`` and of the
    documentation's examples: natural images the offline models can see, with no download.

    Parameters
    ----------
    max_pool_per_class : int, optional
        Keep at most this many pool images per class (of 100).
    max_test_per_class : int, optional
        Keep at most this many test images per class (of 50).
    random_state : int, RandomState or None, default=None
        With None, the first images of each class; else a seeded random subset.

    Returns
    -------
    X_pool : ndarray of uint8 of shape (n_pool, 32, 32, 3)
        RGB images of the pool.
    y_pool : ndarray of int64 of shape (n_pool,)
        Their classes, indices into ``class_names`` (the simulated oracle's answers).
    X_test : ndarray of uint8 of shape (n_test, 32, 32, 3)
        RGB images of the test set.
    y_test : ndarray of int64 of shape (n_test,)
        Their classes.
    class_names : list of str
        ``["airplane", "automobile", "bird", ..., "truck"]``.

    Examples
    --------
    >>> X_pool, y_pool, X_test, y_test, class_names = load_cifar10_sample(max_test_per_class=10)
    >>> X_pool.shape, X_test.shape, class_names[y_pool[0]]
    ((1000, 32, 32, 3), (100, 32, 32, 3), 'airplane')
    """
    import io

    with np.load(CIFAR10_SAMPLE) as data:
        jpeg, offsets = data["jpeg"], data["offsets"]
        labels, is_test, class_names = data["labels"], data["is_test"], data["class_names"].tolist()

    def split(mask, max_per_class):
        rows = np.flatnonzero(mask)
        rows = rows[_subsample_per_class(labels[rows], max_per_class, random_state)]
        images = np.stack([np.asarray(Image.open(io.BytesIO(jpeg[offsets[i]:offsets[i + 1]].tobytes()))
                                      .convert("RGB")) for i in rows])
        return images, labels[rows]

    X_pool, y_pool = split(~is_test, max_pool_per_class)
    X_test, y_test = split(is_test, max_test_per_class)
    return X_pool, y_pool, X_test, y_test, class_names


@dataclass(frozen=True)
class OpenSetSplit:
    """An unlabeled pool and a test split in one of UEO's settings (see :func:`make_open_set`).

    Labels are indices into ``known_classes``; :data:`OOD_LABEL` marks unknown classes.

    Parameters
    ----------
    X_pool : ndarray
        Inputs of the unlabeled pool (paths or images).
    y_pool : ndarray of int
        True labels of the pool (hidden from unsupervised training; used by active learning).
    X_test : ndarray
        Inputs of the test split: every known and every unknown class.
    y_test : ndarray of int
        True test labels, OOD samples marked by :data:`OOD_LABEL`.
    known_classes : list of str
        Names of the classes the model is told about, in label order.
    unknown_classes : list of str
        Names of the other classes; their samples are OOD.
    pool_classes : list of str
        Known classes present in the pool (all of them, except in the partial settings).
    setting : str
        One of :data:`SETTINGS`.
    """

    X_pool: np.ndarray
    y_pool: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    known_classes: list[str]
    unknown_classes: list[str]
    pool_classes: list[str]
    setting: str


def _select_classes(spec, candidates: list[str], rng, what: str) -> list[str]:
    """Resolve ``spec`` (a count or a list of names) to names among ``candidates``."""
    if isinstance(spec, (int, np.integer)):
        if not 1 <= spec <= len(candidates):
            raise ValueError(f"{what} must be between 1 and {len(candidates)}, got {spec}")
        return list(_choose(np.asarray(candidates, dtype=object), int(spec), rng))
    if isinstance(spec, str):
        raise TypeError(f"{what} must be a count or a sequence of class names, not one string")
    names = list(spec)
    unknown = [name for name in names if name not in candidates]
    if unknown or len(set(names)) != len(names) or not names:
        raise ValueError(f"{what} must be distinct names among {candidates}, got {names}")
    return names


def _checked_pair(data, n_classes: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``data`` as arrays ``(X, y)``, checked to be aligned with labels in ``range(n_classes)``."""
    X, y = (np.asarray(part) for part in data)
    if y.ndim != 1 or len(X) != len(y):
        raise ValueError(f"{what} must be a pair (X, y) with len(X) == len(y) and y 1-D")
    if not np.issubdtype(y.dtype, np.integer) or (
        y.size and (y.min() < 0 or y.max() >= n_classes)
    ):
        raise ValueError(f"{what} labels must be integers in [0, {n_classes})")
    return X, y


def make_open_set(train, test, class_names, *, known, setting="open", pool_known=None,
                  random_state=None) -> OpenSetSplit:
    """Build one of the UEO paper's unlabeled-pool settings from a labeled dataset.

    The classes split into *known* ones (their names are given to the model) and
    *unknown* ones (all the others). The pool is drawn from ``train``:

    ============== ================================================
    setting        classes in the pool
    ============== ================================================
    "closed"       all known classes
    "partial"      ``pool_known`` of the known classes
    "open"         all known classes + all unknown classes
    "open-partial" ``pool_known`` of the known classes + all unknown
    ============== ================================================

    The test split is the same in every setting, so results compare across settings:
    every ``test`` sample of a known class (in-distribution) and of an unknown class (OOD,
    labelled :data:`OOD_LABEL`).

    Parameters
    ----------
    train, test : tuple (X, y)
        Inputs (paths or images) and integer labels indexing ``class_names``, e.g. from
        :func:`load_image_folder` on a dataset's ``train`` and ``test`` folders.
    class_names : sequence of str
        Names of all classes.
    known : int or sequence of str
        The known classes: their names (in the label order wanted), or how many to take.
    setting : {"closed", "partial", "open", "open-partial"}, default="open"
        The pool setting.
    pool_known : int or sequence of str, optional
        Partial settings only: the known classes present in the pool, or how many.
        Default: half of the known classes, rounded up.
    random_state : int, RandomState or None, default=None
        Used where a count is given: None takes the first classes in order, a seed a
        random choice.

    Returns
    -------
    OpenSetSplit
        Pool and test inputs with labels re-indexed to ``known_classes`` (-1 = unknown).

    Raises
    ------
    ValueError
        On an unknown setting, an open setting without unknown classes, ``pool_known``
        outside a partial setting, or labels/names that do not fit together.

    Examples
    --------
    >>> import numpy as np
    >>> names = ["cat", "dog", "frog", "ship"]
    >>> X, y = np.array(["a", "b", "c", "d"]), np.array([0, 1, 2, 3])
    >>> split = make_open_set((X, y), (X, y), names, known=["dog", "cat"], setting="open")
    >>> split.y_pool.tolist(), split.unknown_classes
    ([1, 0, -1, -1], ['frog', 'ship'])
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    class_names = list(class_names)
    X_train, y_train = _checked_pair(train, len(class_names), "train")
    X_test, y_test = _checked_pair(test, len(class_names), "test")
    rng = _rng(random_state)
    known_classes = _select_classes(known, class_names, rng, "known")
    unknown_classes = [name for name in class_names if name not in known_classes]
    is_partial = setting in ("partial", "open-partial")
    is_open = setting in ("open", "open-partial")
    if is_open and not unknown_classes:
        raise ValueError(f"setting {setting!r} needs unknown classes, but every class is known")
    if is_partial:
        if pool_known is None:
            pool_known = (len(known_classes) + 1) // 2
        pool_classes = _select_classes(pool_known, known_classes, rng, "pool_known")
    elif pool_known is not None:
        raise ValueError(f"pool_known only applies to partial settings, not {setting!r}")
    else:
        pool_classes = known_classes
    # Maps an original label to its index among the known classes, or to OOD_LABEL.
    relabel = np.full(len(class_names), OOD_LABEL, dtype=np.int64)
    relabel[[class_names.index(name) for name in known_classes]] = np.arange(len(known_classes))
    pool_names = pool_classes + (unknown_classes if is_open else [])
    in_pool = np.isin(y_train, [class_names.index(name) for name in pool_names])
    return OpenSetSplit(
        X_pool=X_train[in_pool],
        y_pool=relabel[y_train[in_pool]],
        X_test=X_test,
        y_test=relabel[y_test],
        known_classes=known_classes,
        unknown_classes=unknown_classes,
        pool_classes=pool_classes,
        setting=setting,
    )
