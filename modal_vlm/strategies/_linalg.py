"""Blocked torch linear algebra over pool-sized matrices, in memory or on disk.

Pools reach 10^7 embeddings, so every pool-by-something product runs in row blocks whose
temporaries stay under :data:`BLOCK_BYTES`; nothing pool-by-pool is ever materialised.

A pool matrix is either a float32 :class:`torch.Tensor` or a :class:`DiskMatrix`, the
row-block reader of a memory-mapped array (float16 or float32) that is never loaded whole:
both give float32 tensors for ``F[slice]`` and ``F[index_tensor]``, which is all the
functions here and the strategies use.
"""
from __future__ import annotations

import mmap
import warnings

import numpy as np
import torch

#: Memory for one block of temporaries (a block of similarities, a gathered slab).
BLOCK_BYTES = 64 * 2**20
#: A :class:`DiskMatrix` hands its mapped pages back to the page cache after this many bytes read.
RELEASE_BYTES = 256 * 2**20


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
    those rows. Pages of a :class:`numpy.memmap` are released after every
    :data:`RELEASE_BYTES` read (``madvise(MADV_DONTNEED)``), so the resident memory of a
    pass over a 10 GB pool stays at one block: the operating system's page cache still
    keeps them for the next pass.

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

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> torch.Tensor:
        if isinstance(rows, torch.Tensor):
            rows = rows.numpy()
        if self.rows is not None:
            rows = self.rows[rows]
        block = np.array(self.array[rows], dtype=np.float32)  # a copy: the mapped pages can go
        self._unreleased += block.nbytes
        if self._unreleased >= RELEASE_BYTES:
            self.release()
        return torch.from_numpy(block)

    def release(self) -> None:
        """Drop this process's mapped pages of the array (no-op for an in-memory array)."""
        self._unreleased = 0
        base = self.array
        while base is not None and not isinstance(base, mmap.mmap):
            base = getattr(base, "_mmap", None) or getattr(base, "base", None)
        if isinstance(base, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
            base.madvise(mmap.MADV_DONTNEED)


def as_matrix(features):
    """``features`` as a pool matrix: a :class:`DiskMatrix` for a memory-mapped array, else a
    float32 tensor (see the module docstring)."""
    if isinstance(features, DiskMatrix):
        return features
    if isinstance(features, np.memmap):
        return DiskMatrix(features)
    return as_tensor(features)


def row_blocks(n_rows: int, row_bytes: int, budget: int | None = None):
    """Slices covering ``range(n_rows)`` so that one block holds about ``budget`` bytes
    (default :data:`BLOCK_BYTES`)."""
    step = max(1, (BLOCK_BYTES if budget is None else budget) // max(1, row_bytes))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def pool_blocks(X):
    """Row slices of the pool matrix ``X`` of about :data:`BLOCK_BYTES` of float32 each."""
    return row_blocks(len(X), 4 * X.shape[1])


def squared_norms(X) -> torch.Tensor:
    """Squared L2 norm of every row, without the ``(n, d)`` temporary of ``(X * X).sum(1)``."""
    if isinstance(X, torch.Tensor):
        return torch.linalg.vector_norm(X, dim=1).square()
    return torch.cat([torch.linalg.vector_norm(X[rows], dim=1).square() for rows in pool_blocks(X)])


def matvec(X, v: torch.Tensor) -> torch.Tensor:
    """``X @ v`` for a pool matrix, block by block when it is on disk."""
    if isinstance(X, torch.Tensor):
        return X @ v
    return torch.cat([X[rows] @ v for rows in pool_blocks(X)])


def nearest_centers(X, centers: torch.Tensor, n_nearest: int = 1):
    """Indices and squared distances of the ``n_nearest`` closest centers of every row of ``X``.

    Returns
    -------
    index : torch.Tensor of shape (n, n_nearest), int64
    sq_dist : torch.Tensor of shape (n, n_nearest), float32, closest first
    """
    center_sq = squared_norms(centers)
    index = torch.empty((len(X), n_nearest), dtype=torch.int64)
    sq_dist = torch.empty((len(X), n_nearest), dtype=torch.float32)
    for rows in row_blocks(len(X), 4 * (len(centers) + X.shape[1])):
        block = X[rows]
        # ||x - c||^2 = ||x||^2 + ||c||^2 - 2 x.c; ranking needs only the last two terms.
        score = center_sq - 2.0 * (block @ centers.T)
        best, index[rows] = torch.topk(score, n_nearest, dim=1, largest=False)
        sq_dist[rows] = (best + squared_norms(block)[:, None]).clamp_min_(0.0)
    return index, sq_dist


def nearest_rows(centers: torch.Tensor, X, n_nearest: int) -> torch.Tensor:
    """Indices ``(K, n_nearest)`` of the rows of the pool matrix ``X`` closest to each center.

    One pass over ``X`` in blocks, keeping a running top ``n_nearest`` per center.
    """
    best = torch.full((len(centers), 0), float("inf"))
    index = torch.empty((len(centers), 0), dtype=torch.int64)
    for rows in row_blocks(len(X), 4 * (len(centers) + X.shape[1])):
        block = X[rows]
        sq = squared_norms(block)[None, :] - 2.0 * (centers @ block.T)  # + ||c||^2, same per row
        best = torch.cat([best, sq], 1)
        index = torch.cat([index, torch.arange(rows.start, rows.stop).expand(len(centers), -1)], 1)
        best, keep = torch.topk(best, min(n_nearest, best.shape[1]), dim=1, largest=False)
        index = torch.gather(index, 1, keep)
    return index
