"""A pool's embeddings as the strategies read them: a float32 tensor, or a :class:`DiskMatrix`
that reads row blocks of a file on disk.

A pool of 10^7 embeddings does not fit in memory (20 GB in float32), so an
:class:`~modal_vlm.embeddings.EmbeddingPool` backed by a ``.npy`` file hands the strategies a
:class:`DiskMatrix`: like a tensor, ``F[slice]`` and ``F[index_tensor]`` give float32 tensors of
those rows, which is all the blocked linear algebra of the strategies
(:mod:`modal_vlm.strategies._linalg`) needs.
"""
from __future__ import annotations

import mmap
import os
import tempfile
import warnings

import numpy as np
import torch

#: A :class:`DiskMatrix` hands its mapped pages back to the page cache after this many bytes read.
RELEASE_BYTES = 256 * 2**20
#: Float32 bytes of one block of rows that :meth:`DiskMatrix.reordered` copies at a time.
COPY_BLOCK_BYTES = 64 * 2**20


def as_tensor(array) -> torch.Tensor:
    """A float32 torch view of ``array``, copying only when dtype or layout require it."""
    if isinstance(array, torch.Tensor):
        return array.detach().to(torch.float32)
    if isinstance(array, DiskMatrix):
        return array[:]
    array = np.ascontiguousarray(array, dtype=np.float32)
    with warnings.catch_warnings():
        # Cached embeddings may be read-only; the strategies never write to them.
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


class DiskMatrix:
    """Float32 row blocks of an ``(n, d)`` array on disk, read without loading it whole.

    Indexing with a slice or an index tensor returns a float32 :class:`torch.Tensor` of
    those rows. A whole ``.npy`` file or :class:`numpy.memmap` of a file (what
    :class:`~modal_vlm.embeddings.EmbeddingPool` opens) is read with positioned file reads, one per run
    of consecutive rows, into a buffer of the rows asked for: the page cache keeps the file
    for the next pass, and the process's resident memory holds only that buffer. (Indexing
    the mapping instead maps whole large page-cache folios, so a gather of scattered rows
    made the resident set a large share of the pool: ``benchmarks/results/query_scaling.md``.)
    Any other array (in memory, or a view of a mapping) is indexed, and a mapping's pages are
    released after every :data:`RELEASE_BYTES` read (``madvise(MADV_DONTNEED)``).

    Parameters
    ----------
    array : numpy.ndarray or numpy.memmap of shape (m, d)
        Any floating dtype (float16 halves the disk and page-cache footprint).
    rows : ndarray of int, optional
        Read only these rows of ``array`` (increasing, for sequential reads); default all.
    """

    def __init__(self, array, rows=None):
        if np.ndim(array) != 2:
            raise ValueError(f"embeddings must be 2-d (n, d), got shape {np.shape(array)}.")
        self.array, self.rows = array, rows
        self.shape = (len(array) if rows is None else len(rows), array.shape[1])
        self._unreleased = 0
        whole_file = (isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap)
                      and array.filename is not None and array.flags.c_contiguous)
        self._file = open(array.filename, "rb", buffering=0) if whole_file else None
        self._offset = array.offset if whole_file else 0

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> torch.Tensor:
        # torch converts float16 to float32 several times faster than numpy's astype.
        return torch.from_numpy(self._stored(rows)).to(torch.float32)

    def _stored(self, rows) -> np.ndarray:
        """The rows, in the array's own dtype, as a new array."""
        if isinstance(rows, torch.Tensor):
            rows = rows.numpy()
        if self.rows is not None:
            rows = self.rows[rows]
        if self._file is not None:
            return self._read(self._file_rows(rows))
        block = np.array(self.array[rows])  # a copy: the mapped pages can go
        self._unreleased += block.nbytes
        if self._unreleased >= RELEASE_BYTES:
            self.release()
        return block

    def _file_rows(self, rows) -> np.ndarray:
        """Row numbers of the file for a slice or index array, as numpy's indexing reads them."""
        n = len(self.array)
        if isinstance(rows, slice):
            return np.arange(*rows.indices(n))
        index = np.asarray(rows).reshape(-1)
        if index.dtype == bool:
            return np.flatnonzero(index)
        if len(index) and (index.min() < -n or index.max() >= n):
            raise IndexError(f"row index out of range for {n} rows.")
        return np.where(index < 0, index + n, index)

    def _read(self, index) -> np.ndarray:
        """Rows ``index`` of the file, in that order: one positioned read per run of
        consecutive rows (in increasing order, then put back in the order asked)."""
        order = np.argsort(index, kind="stable")
        ordered = index[order]
        rows = np.empty((len(index), self.shape[1]), dtype=self.array.dtype)
        raw, row_bytes = memoryview(rows.reshape(-1).view(np.uint8)), rows.itemsize * self.shape[1]
        for start, stop in _runs(ordered):
            chunk = raw[start * row_bytes:stop * row_bytes]
            if os.preadv(self._file.fileno(), [chunk], self._offset + int(ordered[start]) * row_bytes) != len(chunk):
                raise OSError(f"{self.array.filename} holds fewer than its {len(self.array)} rows.")
        if np.all(order[1:] > order[:-1]):
            return rows
        out = np.empty_like(rows)
        out[order] = rows
        return out

    def reordered(self, order, directory=None) -> "DiskMatrix":
        """The rows ``order`` of this matrix, in that order, as a DiskMatrix over a temporary file.

        One sequential pass over this matrix: each block is written where its rows go, one
        positioned write per run of rows that stay together. The file takes this matrix's
        size on disk (its dtype), has no name and is deleted when the copy is closed or
        garbage-collected. It lives in ``directory``: by default the folder of this matrix's
        file, else the system's temporary folder (``TMPDIR``).

        Parameters
        ----------
        order : array-like of int, a permutation of ``range(len(self))``
        directory : str or path-like, optional

        Raises
        ------
        OSError
            The copy cannot be written (e.g. the disk is full); the message says where and
            how much space it needs.
        """
        n, d = self.shape
        where = np.empty(n, dtype=np.int64)
        where[np.asarray(order)] = np.arange(n)
        dtype = self.array.dtype
        row_bytes = dtype.itemsize * d
        if directory is None and self._file is not None:
            directory = os.path.dirname(os.path.abspath(self.array.filename))
        folder = directory if directory is not None and os.access(directory, os.W_OK) else tempfile.gettempdir()
        file = None
        try:
            file = tempfile.TemporaryFile(dir=folder)
            step = max(1, COPY_BLOCK_BYTES // (4 * d))  # rows per block, counted as float32
            for first in range(0, n, step):
                rows = slice(first, min(first + step, n))
                dest = where[rows]
                by_dest = np.argsort(dest, kind="stable")
                dest, block = dest[by_dest], self._stored(rows)[by_dest]
                raw = memoryview(block.reshape(-1).view(np.uint8))
                for start, stop in _runs(dest):
                    os.pwritev(file.fileno(), [raw[start * row_bytes:stop * row_bytes]], int(dest[start]) * row_bytes)
        except OSError as error:
            if file is not None:
                file.close()
            raise OSError(f"could not write a temporary copy of the pool ({n * row_bytes / 1e9:.1f} GB) in "
                          f"{folder}: {error}") from error
        copy = DiskMatrix(np.memmap(file, dtype=dtype, mode="r", shape=(n, d)))
        copy._file, copy._offset = file, 0
        return copy

    def release(self) -> None:
        """Drop this process's mapped pages of the array (no-op for an in-memory array)."""
        self._unreleased = 0
        base = self.array
        while base is not None and not isinstance(base, mmap.mmap):
            base = getattr(base, "_mmap", None) or getattr(base, "base", None)
        if isinstance(base, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
            base.madvise(mmap.MADV_DONTNEED)


def _runs(ordered):
    """``(start, stop)`` positions of the runs of consecutive values in increasing ``ordered``:
    each run is one positioned read or write of a :class:`DiskMatrix` file."""
    starts = np.flatnonzero(np.diff(ordered, prepend=-2) != 1)
    return zip(starts.tolist(), np.append(starts[1:], len(ordered)).tolist())


def as_matrix(features):
    """``features`` as a pool matrix: a :class:`DiskMatrix` for a memory-mapped array, else a
    float32 tensor (see the module docstring)."""
    if isinstance(features, DiskMatrix):
        return features
    if isinstance(features, np.memmap):
        return DiskMatrix(features)
    return as_tensor(features)
