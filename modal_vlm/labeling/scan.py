"""Find the images of a folder, and decide which files the server may ever read.

Only what :func:`scan_images` finds is served: regular files with an image suffix, inside the
folder after every symbolic link is resolved. Hidden files and folders are skipped
(``.thumbnails``, macOS ``._name.jpg`` forks), and so is the project directory when it lies
inside the image folder. :func:`resolve_inside` repeats the containment check when a file
is served, so a file replaced by a link after the scan is refused too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .._files import find_images, unreadable_reason


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
    scan = Scan()
    for path in map(Path, find_images(base, exclude)):
        relative = path.relative_to(base).as_posix()
        target = resolve_inside(base, relative)
        if target is None:
            if path.is_symlink():
                scan.outside.append(relative)
            continue
        reason = unreadable_reason(target)  # the header only: fast
        scan.found[relative] = None if reason is None else f"cannot read image: {reason}"
    return scan


__all__ = ["Scan", "resolve_inside", "scan_images"]
