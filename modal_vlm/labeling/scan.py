"""Find the images of a folder, and decide which files the server may ever read.

Only what :func:`scan_images` finds is served: regular files with an image suffix, inside the
folder after every symbolic link is resolved. Hidden files and folders are skipped
(``.thumbnails``, macOS ``._name.jpg`` forks), and so is the project directory when it lies
inside the image folder. :func:`resolve_inside` repeats the containment check when a file
is served, so a file replaced by a link after the scan is refused too.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..datasets import IMAGE_EXTENSIONS


@dataclass
class Scan:
    """What :func:`scan_images` found.

    Parameters
    ----------
    found : dict
        Relative path (``/``-separated) -> None for a readable image, or why it is unreadable.
    outside : list of str
        Relative paths of links that point out of the folder (left out).
    """

    found: dict = field(default_factory=dict)
    outside: list = field(default_factory=list)


def resolve_inside(root, relative) -> Path | None:
    """The real path of ``root / relative`` if it is a file inside ``root``, else None.

    Parameters
    ----------
    root : str or path-like
        The image folder.
    relative : str
        A path relative to it, as stored by the scan.

    Returns
    -------
    Path or None
        The resolved file; None when it resolves outside ``root`` (``..``, an absolute path,
        a symbolic link leading out), is not a regular file, or does not exist.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "a.png").write_bytes(b"x") and None
    >>> resolve_inside(root, "a.png") == (root / "a.png").resolve()
    True
    >>> resolve_inside(root, "../etc/passwd") is None, resolve_inside(root, "/etc/passwd") is None
    (True, True)
    """
    base = Path(root).resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(base) or not target.is_file():
        return None
    return target


def _readable(path: Path):
    """None if PIL recognises the file as an image (header only: fast), else the reason."""
    try:
        with Image.open(path) as image:
            image.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        return f"cannot read image: {exc}"
    return None


def scan_images(root, exclude=()) -> Scan:
    """The image files of ``root`` (recursively), each checked to be readable.

    The check reads the file's header; a file that fails later, when it is decoded, is set
    aside then (see :class:`~modal_vlm.labeling.session.LabelingSession`).

    Parameters
    ----------
    root : str or path-like
        The image folder.
    exclude : sequence of path-like, default=()
        Folders inside ``root`` to leave out (the project directory).

    Returns
    -------
    Scan
        Readable and unreadable images by relative path, links pointing outside.

    Raises
    ------
    FileNotFoundError
        ``root`` is not a folder.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> Image.new("RGB", (4, 4)).save(root / "ok.png")
    >>> (root / "broken.jpg").write_bytes(b"not an image") and None
    >>> scan = scan_images(root)
    >>> scan.found["ok.png"], scan.found["broken.jpg"][:17]
    (None, 'cannot read image')
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist or is not a folder")
    base = root.resolve()
    excluded = {Path(folder).resolve() for folder in exclude}
    scan = Scan()
    for folder, dirs, files in os.walk(base):  # never follows links to folders
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and here / d not in excluded)
        for name in sorted(files):
            path = here / name
            if name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            relative = path.relative_to(base).as_posix()
            target = resolve_inside(base, relative)
            if target is None:
                if path.is_symlink():
                    scan.outside.append(relative)
                continue
            scan.found[relative] = _readable(target)
    return scan


__all__ = ["Scan", "resolve_inside", "scan_images"]
