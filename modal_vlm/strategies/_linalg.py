"""Blocked torch linear algebra over pool-sized matrices.

Pools reach 10^6 embeddings, so every pool-by-something product runs in row blocks whose
temporaries stay under :data:`BLOCK_BYTES`; nothing pool-by-pool is ever materialised.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

#: Memory for one block of temporaries (a block of similarities, a gathered slab).
BLOCK_BYTES = 64 * 2**20


def as_tensor(array) -> torch.Tensor:
    """A float32 torch view of ``array``, copying only when dtype or layout require it."""
    if isinstance(array, torch.Tensor):
        return array.detach().to(torch.float32)
    array = np.ascontiguousarray(array, dtype=np.float32)
    with warnings.catch_warnings():
        # Cached embeddings may be read-only; the strategies never write to them.
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def row_blocks(n_rows: int, row_bytes: int, budget: int = BLOCK_BYTES):
    """Slices covering ``range(n_rows)`` so that one block holds about ``budget`` bytes."""
    step = max(1, budget // max(1, row_bytes))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def squared_norms(X: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm of every row, without the ``(n, d)`` temporary of ``(X * X).sum(1)``."""
    return torch.linalg.vector_norm(X, dim=1).square()


def nearest_centers(X: torch.Tensor, centers: torch.Tensor, n_nearest: int = 1):
    """Indices and squared distances of the ``n_nearest`` closest centers of every row of ``X``.

    Returns
    -------
    index : torch.Tensor of shape (n, n_nearest), int64
    sq_dist : torch.Tensor of shape (n, n_nearest), float32, closest first
    """
    center_sq = squared_norms(centers)
    index = torch.empty((len(X), n_nearest), dtype=torch.int64)
    sq_dist = torch.empty((len(X), n_nearest), dtype=torch.float32)
    for rows in row_blocks(len(X), 4 * len(centers)):
        block = X[rows]
        # ||x - c||^2 = ||x||^2 + ||c||^2 - 2 x.c; ranking needs only the last two terms.
        score = center_sq - 2.0 * (block @ centers.T)
        best, index[rows] = torch.topk(score, n_nearest, dim=1, largest=False)
        sq_dist[rows] = (best + squared_norms(block)[:, None]).clamp_min_(0.0)
    return index, sq_dist
