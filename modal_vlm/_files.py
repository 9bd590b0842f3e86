"""Image files on disk: which files of a folder are images, whether Pillow reads one, files
written so that a reader (or a crash) never sees half of one, and settings files written by
an older version.

One walker and one readability check, so that the datasets, the experiment runner, the
distributed encoder and the labeling app agree on what an image folder holds.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

#: The suffixes (compared lower-case) of the files taken for images.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})


def find_images(root, exclude=()) -> list[str]:
    """The image files under ``root``, recursively, sorted by path.

    Hidden files and folders (names starting with ``.``) are left out: macOS ``._name.jpg``
    resource forks carry image suffixes, and ``.thumbnails`` or ``.ipynb_checkpoints`` folders
    hold copies. Links to folders are not followed (a link loop cannot hang the walk); links
    to files are listed, even those that lead nowhere, so that the readability check names
    them instead of them vanishing from the data.

    Parameters
    ----------
    root : str or path-like
        The folder to search.
    exclude : sequence of path-like, default=()
        Folders inside ``root`` to leave out (e.g. a project directory kept beside the images).

    Returns
    -------
    list of str
        The paths of the image files (``root`` joined with the path inside it), sorted.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / ".cache").mkdir()
    >>> for name in ("a.png", "B.JPG", ".a.png", "notes.txt", ".cache/c.png"):
    ...     _ = (root / name).write_bytes(b"")
    >>> [pathlib.Path(p).name for p in find_images(root)]
    ['B.JPG', 'a.png']
    """
    excluded = {Path(folder).resolve() for folder in exclude}
    found = []
    for folder, dirs, files in os.walk(root):  # never follows links to folders
        here = Path(folder)
        dirs[:] = [name for name in dirs if not name.startswith(".")
                   and not (excluded and (here / name).resolve() in excluded)]
        found += [str(here / name) for name in files
                  if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS]
    return sorted(found)


def error_without_path(exc: Exception, path) -> str:
    """What Pillow's error says, without the path it repeats (Pillow's
    ``cannot identify image file '/x.png'`` becomes ``cannot identify image file``).

    Parameters
    ----------
    exc : Exception
        What ``PIL.Image.open`` or ``load`` raised.
    path : str or path-like
        The file.

    Returns
    -------
    str
        The reason, or the exception's type name when nothing else is left.

    Examples
    --------
    >>> error_without_path(OSError("cannot identify image file '/x.png'"), "/x.png")
    'cannot identify image file'
    >>> error_without_path(OSError(40, "Too many levels of symbolic links", "/x.png"), "/x.png")
    '[Errno 40] Too many levels of symbolic links'
    """
    return str(exc).replace(repr(str(path)), "").strip().rstrip(":").strip() or type(exc).__name__


def unreadable_reason(path, decode: bool = False) -> str | None:
    """None if Pillow reads the image file ``path``, else why not.

    Parameters
    ----------
    path : str or path-like
        The file.
    decode : bool, default=False
        Decode the whole image (slow: a truncated file fails only then), not just its header
        (fast: format and size).

    Returns
    -------
    str or None
        The reason (see :func:`error_without_path`), or None for a readable image.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> bad = pathlib.Path(tempfile.mkdtemp()) / "bad.jpg"
    >>> _ = bad.write_text("not an image")
    >>> unreadable_reason(bad)
    'cannot identify image file'
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            if decode:
                image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return error_without_path(exc, path)
    return None


def write_atomic(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed over it.

    A reader, or a process killed at any moment, sees the old file or the new one, never a
    partial one. The file gets the mode a plain ``open(path, "w")`` would give (``0666`` less
    the umask), not the ``0600`` of :func:`tempfile.mkstemp`.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.json"
    >>> write_atomic(path, b"{}"); path.read_text()
    '{}'
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def with_legacy_settings(stored: dict, legacy: dict, only=None) -> dict:
    """``stored`` settings, read from a file an older version wrote, completed with the value
    each setting added since (``legacy``: name -> the value files without it were made with)
    had before it existed; with ``only``, just the settings named there.

    The runner's run directories and the labeling app's projects use it, so that a run or a
    project saved before a setting existed is read as what it was made with.

    Examples
    --------
    >>> with_legacy_settings({"lr": 0.1}, {"learner": "prompt", "noise": 0.0}, only={"noise": 0.2})
    {'noise': 0.0, 'lr': 0.1}
    >>> with_legacy_settings({"learner": "linear"}, {"learner": "prompt"})
    {'learner': 'linear'}
    """
    return {**{key: value for key, value in legacy.items() if only is None or key in only}, **stored}
