"""The embedding cache: every image is encoded once per backbone.

Embeddings are keyed by ``(backbone key, image fingerprint)``. The in-memory store is
process-wide, so estimators, their ``clone``\\ s, grid-search candidates and active-learning
rounds share it. With ``cache_dir`` the store is also written to disk as append-only shards
(``<cache_dir>/<backbone digest>/shard-*.npz``) and read back by later processes: only the
shards that hold requested images are read (a :class:`DiskIndex` of the keys says which), so
a cache of 10^7 images serves a labeled set without being loaded whole.

The disk copy is a cache, never the only copy of anything: a shard is written to a temporary
file, flushed to the disk (fsync) and renamed into place, so a crash leaves the old state or
the new one. A shard that cannot be read (empty, truncated, another program's file, embeddings
of the wrong shape or not finite) is moved aside as ``*.npz.damaged`` with a warning naming
it, and its images are encoded again; a shard that cannot be written (a full disk) leaves
its embeddings in memory for the process, with a warning.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import uuid
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ..exceptions import DamagedShard

KEY_BYTES = 16
#: Dtypes the on-disk shards may hold.
STORAGE_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))
#: Suffix added to a shard that cannot be read when it is moved aside.
DAMAGED_SUFFIX = ".damaged"


class EmbeddingStore:
    """Embeddings of one backbone: a growing matrix plus a fingerprint -> row index."""

    def __init__(self):
        self.rows: dict[bytes, int] = {}
        self.matrix: np.ndarray | None = None
        self.disk: dict[str, DiskIndex] = {}

    def lookup(self, keys) -> np.ndarray:
        """Row index of each key, -1 where absent.

        Parameters
        ----------
        keys : sequence of str
            Content fingerprints of the images.

        Returns
        -------
        ndarray of int64 of shape (len(keys),)
            Rows of :attr:`matrix`; -1 for keys not stored.
        """
        return np.fromiter((self.rows.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))

    def add(self, keys, embeddings: np.ndarray) -> None:
        new = [i for i, k in enumerate(keys) if k not in self.rows]
        if not new:
            return
        embeddings = np.asarray(embeddings, dtype=np.float32)[new]
        start = len(self.rows)
        if self.matrix is None:
            self.matrix = np.empty((max(1024, len(new)), embeddings.shape[1]), dtype=np.float32)
        elif start + len(new) > len(self.matrix):  # grow geometrically: amortised O(1) appends
            grown = np.empty((max(2 * len(self.matrix), start + len(new)), self.matrix.shape[1]), np.float32)
            grown[:start] = self.matrix[:start]
            self.matrix = grown
        self.matrix[start:start + len(new)] = embeddings
        for offset, i in enumerate(new):
            self.rows[keys[i]] = start + offset


class DiskIndex:
    """Which shard file and row of a cache folder holds each key (keys only, 24 bytes a key).

    Parameters
    ----------
    folder : Path
        One backbone's cache folder.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.files: list[Path] = []
        self.keys = np.empty(0, f"V{KEY_BYTES}")
        self.where = np.empty((0, 2), np.int64)  # (file, row) of each sorted key

    def refresh(self) -> None:
        """Index the shards written since the last call (by this or another process)."""
        known = set(self.files)
        new = [path for path in _shard_files(self.folder) if path not in known]
        if not new:
            return
        keys, where = [self.keys], [self.where]
        for path in new:
            try:
                shard_keys = _read_shard(path, keys_only=True)[0]
            except DamagedShard as exc:
                set_aside(path, exc)
                continue
            self.files.append(path)
            keys.append(shard_keys)
            where.append(np.stack([np.full(len(shard_keys), len(self.files) - 1),
                                   np.arange(len(shard_keys))], 1))
        keys, where = np.concatenate(keys), np.concatenate(where)
        order = np.argsort(keys, kind="stable")
        self.keys, self.where = keys[order], where[order]

    def locate(self, keys) -> tuple[np.ndarray, np.ndarray]:
        """Where the ``keys`` are, among the shards indexed so far.

        Parameters
        ----------
        keys : sequence of bytes
            Image fingerprints.

        Returns
        -------
        found : ndarray of bool of shape (len(keys),)
            Whether each key is in an indexed shard.
        where : ndarray of int64 of shape (found.sum(), 2)
            ``(index into files, row in that shard)`` of each found key, in order.
        """
        wanted = np.array(keys, dtype=f"V{KEY_BYTES}")
        at = np.minimum(np.searchsorted(self.keys, wanted), max(len(self.keys) - 1, 0))
        found = (self.keys[at] == wanted) if len(self.keys) else np.zeros(len(wanted), bool)
        return found, self.where[at[found]]


_STORES: dict[str, EmbeddingStore] = {}


def _model_dir(cache_dir, model_key: str) -> Path:
    return Path(cache_dir) / hashlib.sha1(model_key.encode()).hexdigest()[:16]


class EmbeddingCache:
    """Look up and add embeddings of one backbone, in memory and optionally on disk.

    Parameters
    ----------
    model_key : str
        :attr:`Backbone.key <modal_vlm.backbones.Backbone>` of the encoder.
    cache_dir : str or Path, optional
        Folder for the on-disk copy; None keeps embeddings in memory only.
    dtype : {"float32", "float16"}, default="float32"
        Storage dtype of the shards this cache writes (float16 halves the disk footprint of
        large pools). Shards of either dtype are read back as float32.
    width : int, optional
        The encoder's embedding size: shards of another width are set aside as damaged.
        None takes the width of the first embeddings stored.

    Examples
    --------
    >>> import numpy as np
    >>> cache = EmbeddingCache("doc-example")
    >>> cache.add([b"k" * 16], np.ones((1, 4)))
    >>> found, emb = cache.get([b"k" * 16, b"x" * 16])
    >>> found.tolist()
    [True, False]
    """

    def __init__(self, model_key: str, cache_dir=None, dtype="float32", width=None):
        self.model_key = model_key
        self.cache_dir = cache_dir
        self.width = width
        self.dtype = np.dtype(dtype)
        if self.dtype not in STORAGE_DTYPES:
            raise ValueError(f"cache dtype must be one of {[str(d) for d in STORAGE_DTYPES]}, got {dtype!r}.")
        self.store = _STORES.setdefault(model_key, EmbeddingStore())

    def get(self, keys) -> tuple[np.ndarray, np.ndarray | None]:
        """``(found mask, embeddings of the found keys in order)``.

        Parameters
        ----------
        keys : sequence of bytes
            Image fingerprints.

        Returns
        -------
        found : ndarray of bool of shape (n_keys,)
            True where the key is stored.
        embeddings : ndarray of float32 of shape (found.sum(), D), or None
            None when no key is found.
        """
        rows = self.store.lookup(keys)
        if self.cache_dir is not None and (rows < 0).any():
            self._read_disk([keys[i] for i in np.flatnonzero(rows < 0)])
            rows = self.store.lookup(keys)
        found = rows >= 0
        if not found.any():
            return found, None
        return found, self.store.matrix[rows[found]]

    def add(self, keys, embeddings) -> None:
        """Store embeddings (and write a shard when a ``cache_dir`` is set).

        Parameters
        ----------
        keys : sequence of bytes
            Image fingerprints; keys already stored are skipped.
        embeddings : array-like of shape (n_keys, D)
            Their embeddings.
        """
        self.store.add(keys, embeddings)
        if self.cache_dir is not None and len(keys):
            try:
                write_shard(self.cache_dir, self.model_key, keys, embeddings, self.dtype)
            except OSError as exc:  # a full disk, a read-only folder: the embeddings stay in memory
                warnings.warn(f"cannot write to the embedding cache {self.cache_dir} ({exc.strerror or exc}): "
                              f"{len(keys)} embeddings are kept in memory for this process only, and a later "
                              "process will encode these images again.", RuntimeWarning, stacklevel=2)

    def _read_disk(self, keys) -> None:
        # Only the shards holding some of ``keys`` are read, and only those rows kept.
        folder = _model_dir(self.cache_dir, self.model_key)
        index = self.store.disk.setdefault(str(folder), DiskIndex(folder))
        index.refresh()
        found, where = index.locate(keys)
        found_keys = [key for key, hit in zip(keys, found) if hit]
        width = self.width if self.store.matrix is None else self.store.matrix.shape[1]
        for file in np.unique(where[:, 0]):
            in_file = np.flatnonzero(where[:, 0] == file)
            try:
                embeddings = _read_shard(index.files[file], width=width)[1]
            except DamagedShard as exc:
                set_aside(index.files[file], exc)
                # Forget the index: it points into the shard set aside (rebuilt on the next read).
                self.store.disk.pop(str(folder), None)
                continue
            self.store.add([found_keys[i] for i in in_file], embeddings[where[in_file, 1]])
            width = self.store.matrix.shape[1]


def write_shard(cache_dir, model_key: str, keys, embeddings, dtype="float32") -> Path:
    """Write one shard of ``(keys, embeddings)`` into the on-disk cache of ``model_key``.

    Atomic and durable (written, flushed to the disk, then renamed): a reader never sees a
    half-written shard, and a crash leaves none. This is how every writer adds to a cache
    folder, in this process or in a distributed encoding job. On failure (a full disk) no
    temporary file is left behind and the ``OSError`` is raised.

    Parameters
    ----------
    cache_dir : str or Path
        The cache folder.
    model_key : str
        The backbone's cache key.
    keys : sequence of bytes
        Image fingerprints (:data:`KEY_BYTES` each).
    embeddings : array-like of shape (n_keys, D)
        Their embeddings, stored as ``dtype``.
    dtype : {"float32", "float16"}, default="float32"
        Storage dtype.

    Returns
    -------
    Path
        The shard file written.
    """
    folder = _model_dir(cache_dir, model_key)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.txt").write_text(model_key + "\n")
    keys_array = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, keys=keys_array, embeddings=np.asarray(embeddings, dtype=dtype))
            f.flush()
            os.fsync(f.fileno())  # on the disk before the rename makes it visible
        shard = folder / f"shard-{uuid.uuid4().hex}.npz"
        os.replace(tmp, shard)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)
    return shard


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; elsewhere a no-op)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def set_aside(shard: Path, reason) -> Path | None:
    """Move a shard that cannot be read out of the cache (``*.npz.damaged``), with a warning.

    Its images are no longer found in the cache, so they are encoded again; the file is
    kept for inspection, and never read again.

    Parameters
    ----------
    shard : Path
        The shard file.
    reason : object
        What is wrong with it, for the warning.

    Returns
    -------
    Path or None
        Where the file went; None if it was gone already (another process set it aside).
    """
    target = shard.with_name(shard.name + DAMAGED_SUFFIX)
    try:
        os.replace(shard, target)
    except FileNotFoundError:
        return None
    except OSError as exc:  # a read-only cache: it cannot be moved, but it is no longer read
        warnings.warn(f"the embedding cache shard {shard} cannot be read ({reason}) nor moved aside ({exc}); "
                      "its images are encoded again.", RuntimeWarning, stacklevel=3)
        return None
    warnings.warn(f"the embedding cache shard {shard} cannot be read ({reason}); moved it aside as "
                  f"{target.name}, its images are encoded again.", RuntimeWarning, stacklevel=3)
    return target


def iter_disk_shards(cache_dir, model_key: str, keys_only: bool = False):
    """The on-disk shards of ``model_key``'s cache, one at a time, in a stable order.

    Parameters
    ----------
    cache_dir : str or Path
        The cache folder.
    model_key : str
        The backbone's cache key.
    keys_only : bool, default=False
        Read only the keys (``embeddings`` is then None).

    Yields
    ------
    keys : ndarray of dtype V16 of shape (m,)
        The shard's image fingerprints (``key.tobytes()`` is the cache key).
    embeddings : ndarray of shape (m, D) or None
        Their embeddings, in the shard's storage dtype (float32 or float16).
    """
    for shard in _shard_files(_model_dir(cache_dir, model_key)):
        try:
            yield _read_shard(shard, keys_only)
        except DamagedShard as exc:
            set_aside(shard, exc)


def _shard_files(folder: Path) -> list[Path]:
    return sorted(Path(folder).glob("shard-*.npz"))


def _read_shard(path: Path, keys_only: bool = False, width=None):
    """``(keys, embeddings)`` of a shard; :class:`DamagedShard` for anything else than
    ``n`` keys of :data:`KEY_BYTES` bytes and ``n`` finite embeddings (of ``width`` columns)."""
    try:
        with np.load(path) as data:
            raw_keys = data["keys"]
            embeddings = None if keys_only else data["embeddings"]
    except FileNotFoundError:
        raise
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, TypeError, AttributeError) as exc:
        raise DamagedShard(f"{type(exc).__name__}: {exc}".splitlines()[0]) from exc
    if raw_keys.dtype != np.uint8 or raw_keys.ndim != 2 or raw_keys.shape[1] != KEY_BYTES:
        raise DamagedShard(f"keys of dtype {raw_keys.dtype} and shape {raw_keys.shape}, not (n, {KEY_BYTES}) bytes")
    keys = np.ascontiguousarray(raw_keys).view(f"V{KEY_BYTES}").reshape(-1)
    if embeddings is not None:
        if embeddings.dtype not in STORAGE_DTYPES or embeddings.ndim != 2 or len(embeddings) != len(keys) \
                or (width is not None and embeddings.shape[1] != width):
            expected = f"({len(keys)}, {'D' if width is None else width})"
            raise DamagedShard(f"embeddings of dtype {embeddings.dtype} and shape {embeddings.shape}, not {expected}")
        if not np.isfinite(embeddings).all():
            raise DamagedShard("embeddings hold NaN or infinite values")
    return keys, embeddings


def clear_memory_cache() -> None:
    """Forget every in-memory embedding of this process (the disk copy stays).

    The next ``fit``, ``predict_proba`` or ``transform`` encodes its images again, or reads
    them back from a ``cache_dir``. Useful to free memory between experiments on different
    images, or to time the encoding.

    Examples
    --------
    >>> from modal_vlm.embeddings import clear_memory_cache
    >>> clear_memory_cache()
    """
    _STORES.clear()
