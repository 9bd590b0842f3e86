"""Blocked torch linear algebra over pool-sized matrices, in memory or on disk.

Pools reach 10^7 embeddings, so every pool-by-something product runs in row blocks whose
temporaries stay under :data:`BLOCK_BYTES`; nothing pool-by-pool is ever materialised.

A pool matrix is either a float32 :class:`torch.Tensor` or a
:class:`~modal_vlm.embeddings.disk.DiskMatrix`, the row-block reader of a memory-mapped array
(float16 or float32) that is never loaded whole: both give float32 tensors for ``F[slice]`` and
``F[index_tensor]``, which is all the functions here and the strategies use.
"""
from __future__ import annotations

import torch

from ..embeddings.disk import as_matrix

#: Memory for one block of temporaries (a block of similarities, a gathered slab).
BLOCK_BYTES = 64 * 2**20


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


class UnitRows:
    """Row-normalised view of a :class:`~modal_vlm.embeddings.disk.DiskMatrix`: each block read is
    L2-normalised.

    Quacks like a pool matrix (``len``, ``shape``, ``[rows]``), so the blocked functions
    here work on it; the normalised pool is never held whole.
    """

    def __init__(self, matrix):
        self.matrix, self.shape = matrix, matrix.shape

    def __len__(self) -> int:
        return len(self.matrix)

    def __getitem__(self, rows) -> torch.Tensor:
        return torch.nn.functional.normalize(self.matrix[rows], dim=1)


def unit_rows(features):
    """``features`` with L2-normalised rows, as a pool matrix.

    The low-budget strategies (TypiClust, ProbCover, herding, DropQuery) work on unit
    embeddings, as their authors do. Embeddings that are unit already (a
    :class:`~modal_vlm.ClipPromptClassifier`'s) are returned as they are, other in-memory
    ones normalised into a copy, and a memory-mapped pool wrapped in :class:`UnitRows`.
    """
    F = as_matrix(features)
    if not isinstance(F, torch.Tensor):
        return UnitRows(F)
    norms = torch.linalg.vector_norm(F, dim=1)
    if len(F) == 0 or bool(((norms - 1.0).abs() <= 1e-4).all()):
        return F
    return torch.nn.functional.normalize(F, dim=1)
